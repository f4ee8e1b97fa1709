"""All three methods train end to end on the real CamVid (../shared) with the shared ImageNet
MobileNetV2 and the real CLIP ViT-B/16 bank, at a tiny budget, and are evaluated on all of val."""

import pytest
from helpers import require_shared

from clipfuse.config import load_config
from clipfuse.engine import train


@pytest.mark.slow
@pytest.mark.parametrize("method", ["plain", "denseclip", "convformer"])
def test_method_trains_and_evaluates_on_real_camvid(tmp_path, method):
    require_shared("data/camvid")
    require_shared("weights/mobilenetv2_100_in1k.pth")
    config = load_config(
        "configs/plain_mobilenetv2_camvid_192x256_140.yaml",
        [
            f"model.method={method}",
            "text.aliases={Pavement: sidewalk, Pedestrian: person, SignSymbol: signboard, Bicyclist: bicycle}",
            "model.decoder_kwargs={channels: 64}",
            "data.crop_size=[96, 128]",
            "data.val_size=[96, 128]",
            "data.batch_size=4",
            "data.num_workers=0",
            "train.max_steps=3",
            "train.val_every=3",
            "train.checkpoint_every=3",
            "train.progress_bar=false",
        ],
    )
    if method == "convformer":
        config["model"]["head_kwargs"] = {"num_blocks": 2}
    results = train(config, tmp_path / "run")
    names = [row["name"] for row in results["per_class"]]
    assert names[:3] == ["Sky", "Building", "Pole"] and len(names) == 11
    assert results["step"] == 3  # 3 steps inside the warm-up: the scores only have to be sane
    assert 0.0 < results["mIoU"] < 100.0 and 0.0 < results["aAcc"] <= 100.0
