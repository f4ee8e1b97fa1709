"""Every shipped config loads and builds; the paper's cost numbers are reproduced."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import require_shared

from clipfuse.backbones import clip_model_of
from clipfuse.build import class_names_of, cost_model
from clipfuse.config import load_config, resolve_path, resolve_spec
from clipfuse.errors import ClipfuseError
from clipfuse.models import method_uses_text
from clipfuse.text.registry import split_spec
from clipfuse.text.resolve import resolve_text_encoder

CONFIGS = sorted(p for p in Path("configs").glob("*.yaml"))


def test_configs_are_named_method_backbone_dataset_crop_iters():
    """``<method>[-lite][-upernet][-w<N>|-realtime]_<backbone>_<dataset>[-gzsl]_<crop>_<iters>``:
    the decoder is Semantic FPN unless the name says ``upernet``; ``-w<N>``: a decoder N
    channels wide (``model.decoder_kwargs.channels``); ``-realtime``: the real-time Semantic
    FPN (128 channels, depthwise-separable, three levels); ``-gzsl``: names are held out
    (``data.dataset_kwargs.unseen``)."""
    assert len(CONFIGS) >= 30
    for path in CONFIGS:
        variant, backbone, dataset, crop, iters = path.stem.split("_")
        method, *options = variant.split("-")
        config = load_config(path)
        assert config["model"]["method"] == method
        widths = [option for option in options if option.startswith("w")]
        assert set(options) - set(widths) <= {"lite", "upernet", "realtime"}
        decoder_kwargs = config["model"].get("decoder_kwargs", {})
        if "realtime" in options:
            assert not widths
            assert decoder_kwargs == {"channels": 128, "separable": True, "levels": 3}
        else:
            channels = decoder_kwargs.get("channels")
            assert widths == ([f"w{channels}"] if channels else [])
        assert config["model"]["decoder"] == ("upernet" if "upernet" in options else "fpn")
        dataset, *protocol = dataset.split("-")
        assert config["data"]["dataset"] == dataset
        assert protocol in ([], ["gzsl"])
        assert bool(protocol) == bool(config["data"]["dataset_kwargs"].get("unseen"))
        assert [int(v) for v in crop.split("x")] == config["data"]["crop_size"]
        assert iters.replace("k", "000") == str(config["train"]["max_steps"])


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_config_builds_its_model(path):
    require_shared("text/clip-vitb16")
    config = load_config(path)
    with torch.device("meta"):  # random text of the encoder's width where it cannot load here
        model = cost_model(config, class_names_of(config))
    assert model.num_classes == len(class_names_of(config))


# The paper's Table 2: pretraining of each row (Semantic FPN and Swin-T on ImageNet, DenseCLIP
# and Conv-Former on CLIP's own ResNet-50 / ResNet-101 / ViT-B/16 image towers).
TABLE2 = {
    ("plain", "resnet50"): None,
    ("plain", "resnet101"): None,
    ("plain", "vit-b16"): None,
    ("denseclip", "resnet50"): "RN50/openai",
    ("denseclip", "resnet101"): "RN101/openai",
    ("denseclip", "vit-b16"): "ViT-B-16/openai",
    ("convformer", "resnet50"): "RN50/openai",
    ("convformer", "resnet101"): "RN101/openai",
    ("convformer", "vit-b16"): "ViT-B-16/openai",
    **{(f"{method}-upernet", "swin-t"): None for method in ("plain", "denseclip", "convformer")},
}


@pytest.mark.parametrize("dataset", ["ade20k_512x512_80k", "cityscapes_512x1024_80k"])
@pytest.mark.parametrize(("method", "backbone"), TABLE2, ids=[f"{m}_{b}" for m, b in TABLE2])
def test_table2_rows_use_the_papers_pretraining_and_matching_text(method, backbone, dataset):
    require_shared("text/clip-vitb16")
    config = load_config(f"configs/{method}_{backbone}_{dataset}.yaml")
    # timm's weights for the row (a bool, not a path named "True")
    assert resolve_path(config["model"]["backbone_kwargs"]["pretrained"]) is True
    clip_model = TABLE2[method, backbone]
    assert clip_model_of(config["model"]["backbone"]) == clip_model
    if clip_model is None:
        assert "clip" not in config["model"]["backbone"]  # timm's ImageNet weights
    if method.startswith("plain"):
        return
    resolved = resolve_text_encoder(config, class_names_of(config))["text"]["encoder"]
    encoder_class, argument = split_spec(resolve_spec(resolved))
    assert encoder_class.clip_models(argument) == {clip_model or "ViT-B-16/openai"}
    if method.startswith("denseclip"):
        with torch.device("meta"):
            model = cost_model(config, class_names_of(config))
        from_clip = clip_model is not None and backbone.startswith("resnet")
        assert model.head.pool_from_clip == from_clip


def test_base_files_merge_in_order_and_overrides_win(tmp_path):
    (tmp_path / "a.yaml").write_text(
        "train: {lr: 0.1, max_steps: 5}\nmodel: {method: convformer, head_kwargs: {dim: 8}}\n"
    )
    (tmp_path / "b.yaml").write_text(
        "_base_: a.yaml\ntrain: {lr: 0.2}\nmodel: {head_kwargs: {heads: 2}}\n"
    )
    (tmp_path / "c.yaml").write_text("_base_: [b.yaml]\ntrain: {max_steps: 7}\n")
    config = load_config(tmp_path / "c.yaml", ["train.lr=0.3"])
    assert config["train"]["lr"] == 0.3 and config["train"]["max_steps"] == 7
    assert config["model"]["head_kwargs"] == {"dim": 8, "heads": 2}
    (tmp_path / "loop.yaml").write_text("_base_: loop.yaml\n")
    with pytest.raises(ClipfuseError, match="includes itself"):
        load_config(tmp_path / "loop.yaml")
    with pytest.raises(ClipfuseError, match="unknown config key 'train.lrr'"):
        load_config(None, ["train.lrr=1"])
    with pytest.raises(ClipfuseError, match="must look like section.key=value"):
        load_config(None, ["train.lr"])


@pytest.mark.parametrize(("method", "paper_gmacs"), [("plain", 32.7), ("convformer", 41.3)])
def test_flops_command_reproduces_the_papers_cost_within_10_percent(method, paper_gmacs):
    require_shared("text/clip-vitb16")
    config = f"configs/{method}_mobilenetv2_ade20k_512x512_80k.yaml"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "clipfuse.cli",
            "flops",
            "--config",
            config,
            "--size",
            "512",
            "512",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    cost = json.loads(result.stdout)
    assert cost["num_classes"] == 150
    assert abs(cost["gmacs"] - paper_gmacs) / paper_gmacs < 0.10
    assert set(cost["groups"]) >= {"backbone", "decoder"}
    if method == "convformer":
        # docs/research/method.md Sec. 2: ~8.4 GMACs for 6 blocks
        assert 7.5 < cost["groups"]["fusion"]["gmacs"] < 9.5


def test_the_old_method_name_fpn_is_read_as_plain_with_a_note(tmp_path, capsys):
    from clipfuse import config as config_module

    config_module._note_renamed_method.cache_clear()
    old = tmp_path / "old.yaml"
    old.write_text("model:\n  method: fpn\n")
    assert load_config(old)["model"]["method"] == "plain"
    assert load_config(None, ["model.method=fpn"])["model"]["method"] == "plain"
    notes = capsys.readouterr().err.strip().splitlines()
    assert notes == ["note: model.method 'fpn' is now called 'plain': read as that"]  # once
    with pytest.raises(ClipfuseError, match="unknown method 'fcn'"):
        method_uses_text("fcn")


# --- shipped configs by name (clipfuse.config_files) ---------------------------------------

NAME = "plain-w128_mobilenetv2_camvid_256x320_5200"


def test_a_shipped_config_is_used_by_name_from_any_folder(tmp_path, monkeypatch):
    from_checkout = load_config(f"configs/{NAME}.yaml")
    monkeypatch.chdir(tmp_path)
    assert load_config(NAME) == from_checkout
    assert load_config(f"configs/{NAME}.yaml") == from_checkout  # the documented path, elsewhere
    assert load_config(f"{NAME}.yaml", ["train.lr=0.5"])["train"]["lr"] == 0.5
    # a file of that name in the working directory is what is read: a path wins
    (tmp_path / f"{NAME}.yaml").write_text("train: {max_steps: 3}\n")
    assert load_config(f"{NAME}.yaml")["train"]["max_steps"] == 3


def test_an_unknown_name_is_one_line_with_the_close_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ClipfuseError) as error:
        load_config("plain_mobilenetv2_camvid_192x256_14")
    message = str(error.value)
    assert "'plain_mobilenetv2_camvid_192x256_14' is neither a file nor a shipped config" in message
    assert "did you mean plain_mobilenetv2_camvid_192x256_140" in message and "\n" not in message
    with pytest.raises(ClipfuseError, match=r"config file runs/nowhere/config.yaml not found"):
        load_config("runs/nowhere/config.yaml")  # a path stays a path


def test_every_config_file_is_package_data():
    """Each file under the package's configs/ matches a package-data pattern of pyproject.toml
    (so it is in the wheel), and the checkout's configs/ is that folder."""
    import fnmatch
    import tomllib

    from clipfuse.config_files import configs_dir

    root = Path(__file__).resolve().parents[1]
    patterns = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["clipfuse"]
    package = configs_dir().parent
    files = [path.relative_to(package).as_posix() for path in configs_dir().rglob("*.yaml")]
    assert len(files) > len(CONFIGS)  # the runs and their _base_ files
    assert [f for f in files if not any(fnmatch.fnmatch(f, p) for p in patterns)] == []
    assert (root / "configs").resolve() == configs_dir().resolve()


def test_the_configs_command_lists_names_and_descriptions(tmp_path, monkeypatch, capsys):
    from clipfuse.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["configs", "camvid"]) == 0
    rows = capsys.readouterr().out.splitlines()
    names = [row.split()[0] for row in rows]
    assert names == sorted(p.stem for p in CONFIGS if "camvid" in p.stem)
    path = Path(__file__).resolve().parents[1] / "configs/plain_mobilenetv2_camvid_192x256_140.yaml"
    first_line = path.read_text().splitlines()[0].lstrip("# ")
    assert rows[names.index(path.stem)].endswith(first_line)
    assert main(["configs", "plain_*_ade20k_*"]) == 0
    names = [row.split()[0] for row in capsys.readouterr().out.splitlines()]
    assert names and all(n.startswith("plain_") and "_ade20k_" in n for n in names)
    assert main(["configs", "no-such-thing"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: no shipped config matches 'no-such-thing'")
    assert error.count("\n") == 1


def test_version_and_bench_take_a_config_name(tmp_path, monkeypatch, capsys):
    import clipfuse
    from clipfuse.cli import main
    from clipfuse.research.bench.candidates import load_candidates

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"clipfuse {clipfuse.__version__}"
    (candidate,) = load_candidates(["plain_mobilenetv2_camvid_192x256_140"], False, None)
    assert candidate.name == "plain_mobilenetv2_camvid_192x256_140"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda path: path.stem)
def test_every_config_opens_with_a_whole_one_line_description(path):
    """What ``clipfuse configs`` and the models page show: one finished sentence, no
    internal references."""
    first = path.read_text().splitlines()[0]
    assert first.startswith("# ") and first.endswith("."), first
    assert not re.search(r"issue \d", first, re.IGNORECASE), first
