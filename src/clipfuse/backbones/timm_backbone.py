"""Image backbones from timm: four feature maps at strides 4, 8, 16 and 32, NCHW.

The paper (Sec. 4.1) pairs its fusion module with MobileNetV2, Xception and EfficientFormer
(lightweight) and ResNet, ViT and Swin (CLIP / heavy). Any timm model with ``features_only``
support works; plain ViTs, which have a single stride-16 map, get a simple multi-level neck.

Table 2 runs DenseCLIP and the Conv-Former on CLIP's own image encoders: timm's
``resnet50_clip.openai``, ``resnet101_clip.openai`` and ``vit_base_patch16_clip_224.openai``
(a pretrained tag after the dot). :func:`clip_model_of` names the open_clip model such a
backbone belongs to, whose text tower gives matching class embeddings.
"""

from collections.abc import Sequence
from pathlib import Path

import timm
import torch
from timm.models import FeatureListNet
from torch import nn
from torch.nn import functional as F

from clipfuse.errors import ClipfuseError, one_line
from clipfuse.extras import require

STRIDES = (4, 8, 16, 32)

# Short names users may type, mapped to timm's names.
ALIASES = {
    "mobilenetv2": "mobilenetv2_100",
    "xception": "xception65",
    "efficientformer": "efficientformer_l1",
    "vit_b16": "vit_base_patch16_224",
    "swin_t": "swin_tiny_patch4_window7_224",
}

# Models whose input size is fixed at construction (attention biases / window sizes).
_NEEDS_IMG_SIZE = ("efficientformerv2", "swin", "vit_")

# timm's CLIP image towers -> the open_clip architecture they were trained with.
CLIP_ARCHS = {
    "resnet50_clip": "RN50",
    "resnet101_clip": "RN101",
    "vit_base_patch16_clip_224": "ViT-B-16",
}
# timm pretrained tags that open_clip spells differently (the others are the same word).
_OPEN_CLIP_TAGS = {"laion2b": "laion2b_s34b_b88k", "datacompxl": "datacomp_xl_s13b_b90k"}


def clip_model_of(name: str) -> str | None:
    """The open_clip ``<arch>/<tag>`` whose image tower the backbone ``name`` is, or None.

    ``resnet50_clip.openai`` -> ``RN50/openai``; a name without a tag means timm's default
    tag. Tags that are not CLIP pairs (ImageNet fine-tunes such as ``openai_ft_in1k``, the
    default of ``vit_base_patch16_clip_224``) give None, as do non-CLIP backbones.
    """
    name = ALIASES.get(name, name)
    arch, _, tag = name.partition(".")
    if arch not in CLIP_ARCHS:
        return None
    open_clip = require("open_clip", f"the CLIP pair of backbone {name!r}")

    tag = tag or timm.models.get_pretrained_cfg(arch).tag
    open_clip_arch = CLIP_ARCHS[arch]
    tag = _OPEN_CLIP_TAGS.get(tag, tag)
    if tag not in open_clip.list_pretrained_tags_by_model(open_clip_arch):
        return None
    return f"{open_clip_arch}/{tag}"


def _is_clip_resnet(arch: str) -> bool:
    """CLIP's ResNets end in an attention pool (timm's ``head``; ``*_clip_gap`` do not)."""
    return arch.startswith("resnet") and arch.endswith("_clip")


class MultiLevelNeck(nn.Module):
    """Turns a plain ViT's stride-16 maps into strides 4/8/16/32 (mmseg's MultiLevelNeck)."""

    def __init__(self, channels: int, scales: Sequence[float] = (4.0, 2.0, 1.0, 0.5)) -> None:
        super().__init__()
        self.scales = tuple(scales)
        self.convs = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(channels, channels, 3, padding=1, bias=False),
                nn.BatchNorm2d(channels),
                nn.ReLU(inplace=True),
            )
            for _ in self.scales
        )

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        outputs = []
        for feature, scale, conv in zip(features, self.scales, self.convs, strict=True):
            feature = F.interpolate(
                feature, scale_factor=scale, mode="bilinear", align_corners=False
            )
            outputs.append(conv(feature))
        return outputs


class TimmBackbone(nn.Module):
    """A timm model as a feature extractor returning ``[c2, c3, c4, c5]`` (strides 4..32, NCHW).

    Args:
        name: a timm model name (or an alias such as ``mobilenetv2``).
        pretrained: ``False``/``None`` for random weights, ``True`` for timm's weights (needs a
            network), or a path to a local ``.pth``/``.safetensors`` state dict of the full timm
            model (loaded strictly by timm, tensors only).
        img_size: input size for models that fix it at construction (Swin, ViT,
            EfficientFormerV2). ``efficientformer_l1`` only runs at 224x224: use
            ``efficientformerv2_*`` for other sizes.
        frozen_bn: keep BatchNorm statistics and affine parameters frozen while training
            (needed for weights whose BatchNorm was folded, such as the shared MobileNetV2).
        mean, std: input normalisation in 0-255 pixel units; default: the weights' own (timm).

    ``attention_pool`` holds the weights of a CLIP ResNet's attention pool (timm's ``head``:
    ``pos_embed``, ``q``, ``k``, ``v``, ``proj``), outside the module's parameters: the
    features stop at c5, and DenseCLIP's head starts from a copy (``None`` for other models).
    """

    attention_pool: dict[str, torch.Tensor] | None

    def __init__(
        self,
        name: str,
        pretrained: bool | str | Path | None = None,
        img_size: int | Sequence[int] | None = None,
        frozen_bn: bool = False,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.name = ALIASES.get(name, name)
        arch = self.name.partition(".")[0]
        if arch not in timm.list_models():
            raise ClipfuseError(
                f"unknown backbone {name!r}: expected a timm model name such as "
                f"{', '.join(sorted(set(ALIASES.values())))}"
            )
        kwargs: dict = {}
        if img_size is not None and self.name.startswith(_NEEDS_IMG_SIZE):
            kwargs["img_size"] = img_size
        if self.name.startswith("vit_"):
            kwargs.update(dynamic_img_size=True, out_indices=(3, 5, 7, 11))
        if pretrained and not isinstance(pretrained, bool):
            path = Path(pretrained).expanduser()
            if not path.is_file():
                raise ClipfuseError(
                    f"backbone weights {path} not found: expected a state-dict file"
                )
            kwargs["pretrained_cfg_overlay"] = {"file": str(path)}
        self.attention_pool = None
        try:
            if _is_clip_resnet(arch):
                # features_only would drop the attention pool: build the whole model, keep
                # the pool's weights, and wrap the rest as timm's features_only does.
                model = timm.create_model(self.name, pretrained=bool(pretrained), **kwargs)
                self.attention_pool = {k: v.detach() for k, v in model.head.state_dict().items()}
                self.body = FeatureListNet(model, out_indices=(1, 2, 3, 4), flatten_sequential=True)
                cfg = model.pretrained_cfg
            else:
                self.body = timm.create_model(
                    self.name, features_only=True, pretrained=bool(pretrained), **kwargs
                )
                cfg = self.body.pretrained_cfg
        except RuntimeError as error:
            if "Invalid pretrained tag" in str(error):
                tags = ", ".join(timm.list_pretrained(f"{arch}.*"))
                raise ClipfuseError(
                    f"backbone {name!r}: unknown pretrained tag ({tags})"
                ) from error
            if "state_dict" in str(error) or "size mismatch" in str(error):
                raise ClipfuseError(
                    f"backbone weights {pretrained} do not fit {self.name}: {one_line(error)}"
                ) from error
            raise
        info = self.body.feature_info
        reductions = info.reduction()
        self.neck: MultiLevelNeck | None = None
        if self.name.startswith("vit_"):
            self.indices = list(range(len(reductions)))
            self.neck = MultiLevelNeck(info.channels()[-1])
        else:
            missing = [s for s in STRIDES if s not in reductions]
            if missing:
                raise ClipfuseError(f"backbone {self.name} has no features at strides {missing}")
            self.indices = [max(i for i, r in enumerate(reductions) if r == s) for s in STRIDES]
        self.channels = [info.channels()[i] for i in self.indices]
        self.channels_last_output = str(getattr(self.body, "output_fmt", "NCHW")).endswith("NHWC")
        self.mean = tuple(mean) if mean is not None else tuple(255.0 * m for m in cfg["mean"])
        self.std = tuple(std) if std is not None else tuple(255.0 * s for s in cfg["std"])
        self.frozen_bn = frozen_bn
        if frozen_bn:
            for module in self.body.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
                    for parameter in module.parameters():
                        parameter.requires_grad_(False)

    def train(self, mode: bool = True) -> "TimmBackbone":
        super().train(mode)
        if self.frozen_bn:
            for module in self.body.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        features = self.body(images)
        features = [features[i] for i in self.indices]
        if self.channels_last_output:
            features = [f.permute(0, 3, 1, 2).contiguous() for f in features]
        if self.neck is not None:
            features = self.neck(features)
        return features


def create_backbone(name: str, **kwargs) -> TimmBackbone:
    """The one entry point for backbones (see :class:`TimmBackbone` for the arguments)."""
    return TimmBackbone(name, **kwargs)
