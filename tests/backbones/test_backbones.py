import numpy as np
import pytest
import timm
import torch
from helpers import require_shared
from PIL import Image

from clipfuse.backbones import create_backbone
from clipfuse.errors import ClipfuseError


def test_shared_mobilenetv2_loads_strictly_and_recognises_the_cat():
    weights = require_shared("weights/mobilenetv2_100_in1k.pth")
    cat = require_shared("samples/cat.bmp")
    labels = require_shared("samples/imagenet_labels.txt").read_text().splitlines()
    state = torch.load(weights, map_location="cpu", weights_only=True)
    classifier = timm.create_model("mobilenetv2_100", pretrained=False).eval()
    classifier.load_state_dict(state, strict=True)
    image = np.array(Image.open(cat).convert("RGB").resize((224, 224), Image.BILINEAR))
    x = (torch.from_numpy(image).permute(2, 0, 1).float()[None] - 127.5) / 127.5
    with torch.no_grad():
        probabilities = classifier(x).softmax(-1)[0]
    top = int(probabilities.argmax())
    assert labels[top + 1] == "Egyptian cat"
    assert probabilities[top] > 0.5

    # The segmentation backbone loads the same file through timm (pretrained=path).
    backbone = create_backbone(
        "mobilenetv2_100", pretrained=str(weights), mean=(127.5,) * 3, std=(127.5,) * 3
    )
    loaded = dict(backbone.body.named_parameters())
    assert torch.equal(loaded["conv_stem.weight"], state["conv_stem.weight"])
    assert torch.equal(loaded["blocks.6.0.conv_pwl.weight"], state["blocks.6.0.conv_pwl.weight"])


@pytest.mark.parametrize(
    ("name", "kwargs", "size"),
    [
        ("mobilenetv2_100", {}, 64),
        ("xception65", {}, 64),
        ("efficientformerv2_s0", {"img_size": 64}, 64),
        ("efficientformer_l1", {}, 224),
        ("resnet50", {}, 64),
        ("swin_tiny_patch4_window7_224", {"img_size": 224}, 224),
        ("vit_base_patch16_224", {"img_size": 64}, 64),
    ],
)
def test_every_backbone_family_gives_strides_4_to_32(name, kwargs, size):
    backbone = create_backbone(name, **kwargs).eval()
    with torch.no_grad():
        features = backbone(torch.randn(1, 3, size, size))
    assert [f.shape[1] for f in features] == backbone.channels
    assert [size // f.shape[-1] for f in features] == [4, 8, 16, 32]
    assert len(backbone.mean) == len(backbone.std) == 3


def test_frozen_bn_stays_in_eval_mode_and_is_not_trained():
    backbone = create_backbone("mobilenetv2_100", frozen_bn=True).train()
    norms = [m for m in backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(not m.training for m in norms)
    assert all(not p.requires_grad for m in norms for p in m.parameters())
    before = norms[0].running_mean.clone()
    backbone(torch.randn(2, 3, 64, 64) * 5)
    assert torch.equal(before, norms[0].running_mean)


def test_unknown_backbone_and_missing_weights_are_one_line_errors(tmp_path):
    with pytest.raises(ClipfuseError, match="unknown backbone 'mobilenet_v9'"):
        create_backbone("mobilenet_v9")
    with pytest.raises(ClipfuseError, match="nothere.pth not found"):
        create_backbone("mobilenetv2_100", pretrained=str(tmp_path / "nothere.pth"))
