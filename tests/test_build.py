"""Text that matches the image side (Table 2): ``text.encoder: auto`` follows a CLIP backbone's
CLIP model; an encoder of another CLIP model is refused unless ``text.allow_mismatch``."""

import json

import numpy as np
import pytest
import torch
from helpers import require_shared

from clipfuse.build import create_model_from_config
from clipfuse.config import load_config
from clipfuse.errors import ClipfuseError
from clipfuse.text import BankEncoder
from clipfuse.text.bank import find_bank
from clipfuse.text.resolve import DEFAULT_TEXT, resolve_text_encoder

NAMES = ["road", "sky", "car"]


def _bank(folder, name, classes, dim, **meta):
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / f"{name}.npy", np.random.default_rng(0).normal(size=(len(classes), dim)))
    (folder / f"{name}.json").write_text(json.dumps({"classes": classes, **meta}))


@pytest.fixture
def banks(tmp_path, monkeypatch):
    """A shared folder with an RN50 bank (the shared banks' metadata), a ViT-B/16 bank (a
    ``clip_model`` entry), a bank that names no model and :data:`DEFAULT_TEXT`'s folder."""
    text = tmp_path / "text"
    _bank(text / "a-rn50", "city", NAMES, 8, encoder="OpenAI CLIP RN50 text encoder")
    _bank(text / "b-vitb16", "city", [*NAMES, "tree"], 4, clip_model="ViT-B-16/openai")
    _bank(text / "c-unnamed", "city", NAMES, 4)
    _bank(text / "clip-vitb16", "city", NAMES, 4, clip_model="ViT-B-16/openai")  # DEFAULT_TEXT
    monkeypatch.setenv("CLIPFUSE_SHARED", str(tmp_path))
    return text


def _config(backbone, *overrides):
    return load_config(None, [f"model.backbone={backbone}", "model.method=convformer", *overrides])


def test_bank_metadata_names_its_clip_model(banks):
    assert BankEncoder.clip_models(str(banks / "a-rn50")) == {"RN50/openai"}
    assert BankEncoder.clip_models(str(banks / "b-vitb16")) == {"ViT-B-16/openai"}
    assert BankEncoder.clip_models(str(banks / "c-unnamed")) == set()
    assert find_bank("RN50/openai", NAMES, banks) == banks / "a-rn50"
    assert find_bank("RN50/openai", [*NAMES, "tree"], banks) is None  # a class is missing
    assert find_bank("ViT-B-16/openai", ["tree"], banks) == banks / "b-vitb16"


def test_auto_text_follows_the_backbones_clip_model(banks, capsys):
    def encoder(backbone):
        return resolve_text_encoder(_config(backbone), NAMES)["text"]["encoder"]

    assert encoder("resnet50_clip.openai") == "bank:shared:text/a-rn50"
    assert encoder("vit_base_patch16_clip_224.openai") == "bank:shared:text/b-vitb16"
    assert encoder("mobilenetv2_100") == DEFAULT_TEXT  # not a CLIP tower: the paper's text
    assert encoder("vit_base_patch16_clip_224") == DEFAULT_TEXT  # ImageNet fine-tuned tag
    assert capsys.readouterr().err == ""
    # No bank of RN101: the real encoder of the same model, announced in one line on stderr.
    assert encoder("resnet101_clip.openai") == "open_clip:RN101/openai"
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no text bank of CLIP RN101/openai" in err
    assert "open_clip:RN101/openai" in err


@pytest.mark.parametrize(
    "spec",
    ["bank:shared:text/b-vitb16", "open_clip:ViT-B-16/openai", "open_clip:RN50/yfcc15m"],
)
def test_text_of_another_clip_model_is_refused_unless_allowed(banks, spec):
    config = _config("resnet50_clip.openai", f"text.encoder={spec}")
    with pytest.raises(ClipfuseError, match="text.allow_mismatch=true") as error:
        resolve_text_encoder(config, NAMES)
    assert "\n" not in str(error.value) and "RN50/openai" in str(error.value)
    allowed = _config("resnet50_clip.openai", f"text.encoder={spec}", "text.allow_mismatch=true")
    assert resolve_text_encoder(allowed, NAMES)["text"]["encoder"] == spec


@pytest.mark.parametrize(
    "spec",
    [
        "bank:shared:text/a-rn50",  # the same model, named explicitly
        "open_clip:RN50/openai",
        "open_clip:RN50//local/checkpoint.pt",  # a local checkpoint of the same architecture
        "bank:shared:text/c-unnamed",  # names no model: cannot be checked
        "random:8",  # the text = random ablation
    ],
)
def test_explicit_text_that_matches_or_cannot_be_checked_is_kept(banks, spec):
    config = _config("resnet50_clip.openai", f"text.encoder={spec}")
    assert resolve_text_encoder(config, NAMES)["text"]["encoder"] == spec
    # On a non-CLIP backbone any CLIP text goes (Table 1: ImageNet backbones, ViT-B/16 text).
    plain = _config("mobilenetv2_100", "text.encoder=bank:shared:text/a-rn50")
    assert resolve_text_encoder(plain, NAMES) == plain


def test_the_model_is_built_with_the_matching_bank(banks, capsys):
    config = _config(
        "resnet50_clip.openai",
        "model.method=denseclip",
        "model.head_kwargs={context_width: 16, context_heads: 2}",
        "model.decoder_kwargs={channels: 16}",
        "data.dataset=folder",
    )
    with torch.device("meta"):
        model = create_model_from_config(config, NAMES)
    rows = BankEncoder(str(banks / "a-rn50")).encode(NAMES)
    torch.testing.assert_close(model.head.text_embeddings, rows)  # RN50 text, not ViT-B/16's
    assert model.head.pool.c_proj.out_features == 1024  # CLIP RN50's width; text 8 -> 1024
    err = capsys.readouterr().err
    assert "attention pool starts from resnet50_clip.openai's CLIP pool" in err
    assert "random weights (model.backbone_kwargs.pretrained is off)" in err
    mismatched = _config("resnet50_clip.openai", "text.encoder=bank:shared:text/b-vitb16")
    with pytest.raises(ClipfuseError, match="would not be aligned"):
        create_model_from_config(mismatched, NAMES, pretrained=False)


def test_denseclip_says_when_its_attention_pool_is_random(capsys):
    config = load_config(
        None,
        [
            "model.method=denseclip",
            "model.head_kwargs={context_width: 16, context_heads: 2}",
            "text.encoder=random:8",
        ],
    )
    with torch.device("meta"):
        create_model_from_config(config, NAMES)
    err = capsys.readouterr().err.splitlines()
    assert (
        "note: DenseCLIP's attention pool is randomly initialised (mobilenetv2_100 has none)" in err
    )


def test_shared_banks_give_rn50_text_for_cityscapes_and_vitb16_for_ade20k():
    require_shared("text/clip-rn50/cityscapes.json")
    require_shared("text/clip-vitb16/ade20k.json")
    for path, expected in [
        ("configs/denseclip_resnet50_cityscapes_512x1024_80k.yaml", "bank:shared:text/clip-rn50"),
        ("configs/convformer_vit-b16_ade20k_512x512_80k.yaml", "bank:shared:text/clip-vitb16"),
        ("configs/denseclip_resnet50_ade20k_512x512_80k.yaml", "open_clip:RN50/openai"),
    ]:
        from clipfuse.build import class_names_of

        config = load_config(path)
        resolved = resolve_text_encoder(config, class_names_of(config))
        assert resolved["text"]["encoder"] == expected, path
