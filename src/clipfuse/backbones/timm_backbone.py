"""Image backbones from timm: four feature maps at strides 4, 8, 16 and 32, NCHW.

The paper (Sec. 4.1) pairs its fusion module with MobileNetV2, Xception and EfficientFormer
(lightweight) and ResNet, ViT and Swin (CLIP / heavy). Any timm model with ``features_only``
support works; plain ViTs, which have a single stride-16 map, get a simple multi-level neck.
"""

from collections.abc import Sequence
from pathlib import Path

import timm
import torch
from torch import nn
from torch.nn import functional as F

from clipfuse.errors import ClipfuseError

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
    """

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
        if self.name not in timm.list_models():
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
        try:
            self.body = timm.create_model(
                self.name, features_only=True, pretrained=bool(pretrained), **kwargs
            )
        except RuntimeError as error:
            if "state_dict" in str(error) or "size mismatch" in str(error):
                raise ClipfuseError(
                    f"backbone weights {pretrained} do not fit {self.name}: "
                    f"{str(error).splitlines()[0]}"
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
        cfg = self.body.pretrained_cfg
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
