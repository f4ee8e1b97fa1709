"""The Hugging Face Hub through huggingface_hub, real code end to end against a local stand-in
hub on 127.0.0.1 (``tests/standin_hub.py``): ``save_pretrained(push_to_hub=True)`` of a model
built from a config, the pushed files read back by huggingface_hub's own client (the model
card parsed with ``ModelCard.load``), ``clipfuse.load("owner/name")`` into a fresh hub cache
predicting what the in-memory model predicts, again offline from the cache, and one-line
errors for a missing repository, an unreachable hub and a repository that is not a model.

Each step runs in a child process with the hub's environment (``hub_environment``), as
huggingface_hub reads it when imported."""

import json
import subprocess
import sys

import numpy as np
import pytest
import yaml
from helpers import tiny_config, write_folder_dataset
from huggingface_hub import ModelCard
from safetensors.torch import load_file
from standin_hub import hub_environment, serve

import clipfuse
from clipfuse import ClipfuseError
from clipfuse.build import create_model_from_config
from clipfuse.hub import is_repo_id
from clipfuse.models import create_model

CLASSES = ["sky", "road", "car"]
REPO = "me/tiny"

PUSH_AND_READ = """
import json, os, sys, numpy as np, torch, yaml
from huggingface_hub import ModelCard, hf_hub_download
import clipfuse
from clipfuse.build import create_model_from_config
from clipfuse.cli import main
from clipfuse.inference import ClipfuseModel
config_path, out, image = sys.argv[1:4]
config = yaml.safe_load(open(config_path))
torch.manual_seed(0)
model = create_model_from_config(config, ["sky", "road", "car"], pretrained=False)
model.save_pretrained(out, push_to_hub=True, repo_id="me/tiny", metrics={"mIoU": 42.5,
    "mAcc": 51.25}, dataset="camvid", commit_message="a tiny model")
memory = ClipfuseModel(model, model.config, model.class_names, device="cpu")
np.save(f"{out}/memory.npy", memory.predict(image).label_map)
# huggingface_hub's own client (into a cache of its own), then clipfuse, read what was pushed.
files = {name: hf_hub_download("me/tiny", name, cache_dir=f"{out}/client-cache") for name in
         ("config.json", "README.md", "model.safetensors")}
card = ModelCard.load(files["README.md"])
cache = os.path.join(os.environ["HF_HOME"], "hub")
cached_before = os.listdir(cache) if os.path.isdir(cache) else []
loaded = clipfuse.load("me/tiny", device="cpu")
np.save(f"{out}/hub.npy", loaded.predict(image).label_map)
errors = {}
for repo, revision in (("me/nothing", None), ("me/not-clipfuse", None), ("me/tiny", "v9")):
    try:
        clipfuse.load(repo, device="cpu", revision=revision)
    except clipfuse.ClipfuseError as error:
        errors[revision or repo] = str(error)
status = main(["predict", image, "--model", "me/tiny", "--out", f"{out}/cli"])
print(json.dumps({"files": files, "card": card.data.to_dict(), "text": card.text,
                  "errors": errors, "status": status, "source": loaded.source,
                  "cached_before": cached_before}))
"""

OFFLINE = """
import sys, numpy as np
import clipfuse
out, image = sys.argv[1:3]
np.save(f"{out}/offline.npy", clipfuse.load("me/tiny", device="cpu").predict(image).label_map)
try:
    clipfuse.load("me/nothing", device="cpu")
except clipfuse.ClipfuseError as error:
    print(error)
"""


def child(script: str, env: dict, *args) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-c", script, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture
def tiny(tmp_path):
    """A tiny config's YAML file and a test image."""
    data = write_folder_dataset(tmp_path / "data", classes=CLASSES)
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(tiny_config(data, "convformer")))
    image = sorted((data / "images" / "val").glob("*.png"))[0]
    return config_path, image


def test_push_then_load_by_hub_id_online_and_offline(tiny, tmp_path):
    config_path, image = tiny
    out = tmp_path / "pushed"
    files = {"me/not-clipfuse/config.json": b'{"architectures": ["BertModel"]}'}
    commits: list[dict] = []
    with serve(files, commits) as endpoint:
        env = hub_environment(endpoint, tmp_path / "hf")
        read = child(PUSH_AND_READ, env, config_path, out, image)
    # Pushed: the three files of the folder, one commit with our message.
    pushed = {name: data for name, data in files.items() if name.startswith(f"{REPO}/")}
    assert sorted(pushed) == [
        f"{REPO}/{n}" for n in ("README.md", "config.json", "model.safetensors")
    ]
    for name in ("README.md", "config.json", "model.safetensors"):
        assert pushed[f"{REPO}/{name}"] == (out / name).read_bytes()
    assert [(c["repo"], c["summary"]) for c in commits] == [(REPO, "a tiny model")]

    # huggingface_hub's own client reads what was pushed.
    report = json.loads(read.stdout.strip().splitlines()[-1])
    assert not [n for n in report["cached_before"] if "tiny" in n]  # clipfuse.load downloads
    for name, path in report["files"].items():
        assert open(path, "rb").read() == (out / name).read_bytes(), name
        assert str(out / "client-cache") in path
    card = report["card"]
    assert card["library_name"] == "clipfuse" and card["license"] == "apache-2.0"
    assert {"semantic-segmentation", "convformer", "mobilenetv2_100"} <= set(card["tags"])
    assert card["datasets"] == ["camvid"]
    results = card["model-index"][0]["results"][0]
    assert results["dataset"]["type"] == "camvid"
    assert {m["name"]: m["value"] for m in results["metrics"]} == {"mIoU": 42.5, "mAcc": 51.25}
    assert "| mIoU | 42.50 |" in report["text"] and "`sky`, `road`, `car`" in report["text"]
    assert "clipfuse train --config config.yaml" in report["text"]
    assert json.loads((out / "config.json").read_text())["class_names"] == CLASSES
    assert (
        load_file(report["files"]["model.safetensors"]).keys()
        == load_file(out / "model.safetensors").keys()
    )

    # clipfuse.load("me/tiny") in a fresh cache predicts what the in-memory model predicted.
    memory = np.load(out / "memory.npy")
    assert len(np.unique(memory)) > 1  # a label map that could differ
    np.testing.assert_array_equal(np.load(out / "hub.npy"), memory)
    assert str(tmp_path / "hf") in report["source"]
    assert report["status"] == 0 and list((out / "cli").glob("*.png"))
    missing, foreign = report["errors"]["me/nothing"], report["errors"]["me/not-clipfuse"]
    assert "\n" not in missing and "no model repository me/nothing" in missing
    assert "\n" not in foreign and "me/not-clipfuse is not a clipfuse model" in foreign
    assert report["errors"]["v9"] == "model me/tiny has no revision 'v9' on the Hub"

    # The hub is gone: offline from the cache gives the same labels; a repo never downloaded
    # is a one-line error naming the offline mode.
    offline_env = {**hub_environment(endpoint, tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    offline = child(OFFLINE, offline_env, out, image)
    np.testing.assert_array_equal(np.load(out / "offline.npy"), memory)
    line = offline.stdout.strip()
    assert "\n" not in line and "me/nothing" in line and "HF_HUB_OFFLINE is set" in line


def test_unreachable_hub_is_one_line(tmp_path):
    with serve({}) as endpoint:
        pass  # closed: nothing listens there any more
    result = subprocess.run(
        [sys.executable, "-m", "clipfuse.cli", "predict", "x.png", "--model", REPO],
        capture_output=True,
        text=True,
        timeout=120,
        env=hub_environment(endpoint, tmp_path / "hf"),
        cwd=tmp_path,
    )
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1, result.stderr[-2000:]
    assert f"model {REPO}: no such local path" in errors[0]
    assert f"while the Hugging Face Hub ({endpoint}) cannot be reached" in errors[0]


def test_segmentor_save_pretrained_writes_a_card_and_loads_back(tiny, tmp_path):
    config_path, image = tiny
    config = yaml.safe_load(config_path.read_text())
    model = create_model_from_config(config, CLASSES, pretrained=False).train()
    folder = model.save_pretrained(tmp_path / "m", metrics={"mIoU": 10.0})
    assert model.training  # left as it was
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
    ]
    card = ModelCard.load(folder / "README.md")
    assert card.data.library_name == "clipfuse" and card.data.datasets == ["folder"]  # config's
    assert [(r.dataset_type, r.metric_name) for r in card.data.eval_results] == [("folder", "mIoU")]
    loaded = clipfuse.load(folder, device="cpu")
    assert loaded.class_names == CLASSES
    model.eval()
    again = clipfuse.inference.ClipfuseModel(model, config, CLASSES, device="cpu")
    np.testing.assert_array_equal(loaded.predict(image).label_map, again.predict(image).label_map)

    # A run's metrics.json is accepted as metrics, its step shown; the card is replaced.
    metrics = {"aAcc": 80.0, "mIoU": 33.3, "mAcc": 40.0, "per_class": [], "step": 6}
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    model.save_pretrained(folder, metrics=tmp_path / "metrics.json")
    assert "val split, step 6" in (folder / "README.md").read_text()


def test_bad_input_is_one_line_and_writes_nothing(tiny, tmp_path):
    config_path, _ = tiny
    config = yaml.safe_load(config_path.read_text())
    model = create_model_from_config(config, CLASSES, pretrained=False)
    with pytest.raises(ClipfuseError, match="metrics: mIoU is 'high', expected a number"):
        model.save_pretrained(tmp_path / "m", metrics={"mIoU": "high"})
    with pytest.raises(ClipfuseError, match="metrics .*nowhere.json could not be read"):
        model.save_pretrained(tmp_path / "m", metrics=tmp_path / "nowhere.json")
    assert not (tmp_path / "m").exists()

    bare = create_model("plain", "mobilenetv2_100", num_classes=3)
    with pytest.raises(ClipfuseError, match=r"needs the model's run config and class names"):
        bare.save_pretrained(tmp_path / "bare")
    with pytest.raises(ClipfuseError, match="revision= is for a Hub id"):
        clipfuse.load(tmp_path, revision="main")


def test_hub_ids_and_local_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert is_repo_id("owner/name") and is_repo_id("me/tiny-v1.2")
    for local in ("./owner/name", "owner/name/extra", "name", "/abs/path", "a/b.ckpt/"):
        assert not is_repo_id(local), local
    (tmp_path / "owner" / "name").mkdir(parents=True)
    assert not is_repo_id("owner/name")  # an existing folder wins over the Hub
    assert not is_repo_id("owner/na--me")  # huggingface_hub's own rules
