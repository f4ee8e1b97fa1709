from clipfuse.backbones.timm_backbone import STRIDES, TimmBackbone, create_backbone

__all__ = ["STRIDES", "TimmBackbone", "create_backbone"]
