from clipfuse.backbones.timm_backbone import STRIDES, TimmBackbone, clip_model_of, create_backbone

__all__ = ["STRIDES", "TimmBackbone", "clip_model_of", "create_backbone"]
