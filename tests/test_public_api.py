"""The public API, as a timm / smp user meets it: ``clipfuse.list_models``,
``clipfuse.create_model`` (a registered variant or a run config, own class names), a training
loop of the user's own, and ``clipfuse list-models``."""

import subprocess
import sys

import pytest
import torch

import clipfuse
from clipfuse.build import create_model_from_config
from clipfuse.cli import main
from clipfuse.config import load_config, with_defaults
from clipfuse.config_files import configs_dir
from clipfuse.errors import ClipfuseError
from clipfuse.losses import segmentation_loss
from clipfuse.models import is_model, registry
from clipfuse.models.registry import register_model, variant_config

SMALL_HEAD = {"dim": 64, "heads": 2, "num_blocks": 2}


def test_import_clipfuse_stays_light():
    code = "import sys, clipfuse; print('torch' in sys.modules, clipfuse.__all__)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.startswith("False "), result.stderr
    assert {"create_model", "list_models"} <= set(clipfuse.__all__)
    assert clipfuse.create_model.__module__ == "clipfuse.models.api"


def test_list_models_matches_patterns_sorted():
    names = clipfuse.list_models()
    assert names == sorted(names)
    for name in ("plain_mobilenetv2", "plain_mobilenetv2_w128", "convformer_mobilenetv2"):
        assert name in names and is_model(name)
    assert {"convformer_lite_mobilenetv2", "denseclip_mobilenetv2"} <= set(names)
    convformers = clipfuse.list_models("convformer_*")
    assert convformers and all(name.startswith("convformer_") for name in convformers)
    assert set(convformers) < set(names)
    assert clipfuse.list_models("*_w128") == ["plain_mobilenetv2_w128"]
    assert clipfuse.list_models("segformer*") == []
    assert not is_model("convformer")


def test_every_shipped_model_is_a_variant_and_every_variant_is_its_config():
    """A variant is its config's model and text sections (one source): each registered name
    builds what its method's configs build, and every (method, backbone, decoder) that a
    shipped config trains has a name."""
    shipped = set()
    for path in configs_dir().glob("*.yaml"):
        model = load_config(path)["model"]
        shipped.add((model["method"], model["backbone"], model["decoder"]))
    named = set()
    for name in clipfuse.list_models():
        model = variant_config(name)["model"]
        assert name.startswith(model["method"] + "_"), name
        named.add((model["method"], model["backbone"], model["decoder"]))
    assert len(shipped) > 20 and not shipped - named
    w128 = variant_config("plain_mobilenetv2_w128")["model"]
    assert w128["decoder_kwargs"]["channels"] == 128  # plain-w128_mobilenetv2_camvid_256x320_5200
    lite = variant_config("convformer_lite_mobilenetv2")["model"]["head_kwargs"]
    assert (lite["dim"], lite["downsample"]) == (256, "depthwise")


def test_an_unknown_name_is_one_line_naming_close_matches():
    with pytest.raises(ClipfuseError) as error:
        clipfuse.create_model("convformer_mobilnetv2", ["road"])
    message = str(error.value)
    assert "\n" not in message and "unknown model 'convformer_mobilnetv2'" in message
    assert "convformer_mobilenetv2" in message
    with pytest.raises(ClipfuseError, match="already registered"):
        register_model("plain_mobilenetv2", "plain_mobilenetv2_camvid_256x320_800")


def test_a_users_own_variant_is_a_mapping_of_model_and_text(monkeypatch):
    monkeypatch.setattr(registry, "_VARIANTS", dict(registry._VARIANTS))  # restored after
    own = {"model": {"method": "plain", "decoder_kwargs": {"channels": 16}}}
    register_model("plain_tiny", own)
    assert "plain_tiny" in clipfuse.list_models("plain_*")
    model = clipfuse.create_model("plain_tiny", num_classes=2)
    assert model.class_names == ["class_0", "class_1"]
    assert model.config["model"]["decoder_kwargs"] == {"channels": 16}
    assert model(torch.rand(1, 3, 64, 64) * 255)["logits"].shape == (1, 2, 64, 64)


def test_overrides_are_checked_by_the_config_schema():
    with pytest.raises(ClipfuseError, match=r"model.decoder_kwargs.chanels is unknown.*channels"):
        clipfuse.create_model("plain_mobilenetv2", ["a", "b"], decoder_kwargs={"chanels": 64})
    with pytest.raises(ClipfuseError, match="unknown config key 'model.decoder_kwarg'"):
        clipfuse.create_model("plain_mobilenetv2", ["a", "b"], decoder_kwarg={"channels": 64})
    with pytest.raises(ClipfuseError, match="num_classes is 3 but 2 class names"):
        clipfuse.create_model("plain_mobilenetv2", ["a", "b"], num_classes=3)


def test_a_plain_variant_with_own_classes_carries_its_config_and_names():
    model = clipfuse.create_model(
        "plain_mobilenetv2_w128", ["road", "tree", "sky"], decoder_kwargs={"dropout": 0.0}
    )
    assert model.class_names == ["road", "tree", "sky"]
    assert model.config == with_defaults(model.config)  # full and valid, as saved configs are
    assert model.config["model"]["decoder_kwargs"] == {"channels": 128, "dropout": 0.0}
    outputs = model(torch.rand(2, 3, 64, 96) * 255)
    assert set(outputs) == {"logits"} and outputs["logits"].shape == (2, 3, 64, 96)


def test_a_config_builds_the_same_model_as_its_name():
    names, kwargs = ["cat", "dog", "grass"], {"head_kwargs": SMALL_HEAD}
    torch.manual_seed(0)
    by_name = clipfuse.create_model("convformer_mobilenetv2", names, text="random:64", **kwargs)
    torch.manual_seed(0)
    by_config = clipfuse.create_model(by_name.config, names)
    assert by_config.config == by_name.config and by_name.config["text"]["encoder"] == "random:64"
    assert by_name.head.text_embeddings.shape == (3, 64)
    theirs = by_config.state_dict()
    assert all(torch.equal(tensor, theirs[key]) for key, tensor in by_name.state_dict().items())
    torch.manual_seed(0)
    engine = create_model_from_config(by_name.config, names, pretrained=False)
    assert engine.config == by_name.config and engine.class_names == names


def test_a_users_own_training_loop_lowers_the_loss():
    torch.manual_seed(0)
    model = clipfuse.create_model(
        "convformer_mobilenetv2",
        ["road", "car", "person"],
        text="random:64",
        head_kwargs=SMALL_HEAD,
        decoder_kwargs={"channels": 32},
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    images = torch.rand(2, 3, 64, 64) * 255
    masks = torch.zeros(2, 64, 64, dtype=torch.long)  # road left, car top right, person below
    masks[:, :32, 32:], masks[:, 32:, 32:] = 1, 2
    masks[:, :4] = 255  # ignored
    losses = []
    for _ in range(20):
        outputs = model(images)
        assert outputs["logits"].shape == (2, 3, 64, 64)
        assert outputs["score_map"].shape == (2, 3, 2, 2)
        loss = segmentation_loss(outputs, masks)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-3:]) < 0.7 * sum(losses[:3]), losses


def test_text_embeddings_of_ones_own_set_the_number_of_classes():
    text = torch.randn(4, 32)
    model = clipfuse.create_model("convformer_lite_mobilenetv2", text=text, head_kwargs=SMALL_HEAD)
    assert model.class_names == ["class_0", "class_1", "class_2", "class_3"]
    torch.testing.assert_close(model.head.text_embeddings, text)
    with pytest.raises(ClipfuseError, match="text embeddings' rows is 4 but 2 class names"):
        clipfuse.create_model("convformer_lite_mobilenetv2", ["a", "b"], text=text)


def test_cli_list_models(capsys):
    assert main(["list-models", "denseclip_*"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert [row[0] for row in rows] == clipfuse.list_models("denseclip_*")
    assert ["denseclip_mobilenetv2", "denseclip_mobilenetv2_camvid_192x256_140"] in rows
    assert main(["list-models", "nothing*"]) != 0
    assert "no model matches 'nothing*'" in capsys.readouterr().err
