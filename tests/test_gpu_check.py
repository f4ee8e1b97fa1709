"""The GPU device check (tools/gpu_check.py) runs every step on the CPU here, on tiny data, so
the script a GPU machine runs cannot rot unseen; and its data subset is laid out as CamVid."""

import json

from helpers import load_script, require_shared, write_tiny_configs

from clipfuse.data import create_dataset

gpu_check = load_script("tools/gpu_check.py")


def test_every_step_of_the_check_runs_and_is_reported(folder_dataset, tmp_path):
    config = write_tiny_configs(folder_dataset, tmp_path)[0]
    bench = "--size 64 64 --batch 1 --train-batch 1 --train-steps 1 --repeats 1 --warmup 0"
    argv = ["run", "--out", str(tmp_path / "check"), "--device", "cpu", "--steps", "4"]
    argv += ["--config", str(config), "--bench", f"{bench} --no-memory"]
    code = gpu_check.main([*argv, "--export", "--exporter torchscript"])  # the faster exporter
    report = json.loads((tmp_path / "check" / "gpu_check.json").read_text())
    assert code == 0, report
    steps = [step["step"] for step in report["steps"]]
    assert steps == ["train", "resume", "eval", "bench", "export", "ddp"]
    assert all(step["rc"] == 0 for step in report["steps"])
    train, resume = report["steps"][:2]
    assert any(note.startswith("note: training in ") for note in train["notes"])  # auto, announced
    assert report["metrics"]["step"] == 4 and 0 <= report["eval"]["mIoU"] <= 100
    assert report["bench"]["machine"]["auto"]["train"]
    assert (tmp_path / "check" / "model.onnx").is_file()


def test_the_subset_is_a_camvid_folder(tmp_path):
    shared = require_shared("data/camvid").parent.parent
    gpu_check.prepare(shared, tmp_path, train_images=3, val_images=2, wheels=False)
    root = tmp_path / "shared" / "data" / "camvid"
    assert len(create_dataset("camvid", root=root, split="train")) == 3
    assert len(create_dataset("camvid", root=root, split="val")) == 2
    assert (tmp_path / "shared" / "weights" / "mobilenetv2_100_in1k.pth").is_file()
