"""The GPU device check: every GPU path of clipfuse, run once, with a JSON report.

``prepare`` (here, with ``../shared`` and the package registry at hand) lays out what a bare GPU
machine lacks in an ignored folder, ``.gpu-check/`` (about 40 MB, under the 64 MiB a remote
machine is sent): a CamVid subset (48 train, 16 val images), the ImageNet MobileNetV2 weights,
and wheels of the pure-Python / manylinux packages clipfuse needs beyond PyTorch's stack.
``run`` (``make gpu-check`` there, via ``tools/gpu_check.sh``) then runs, each as the user would
type it and each timed:

1. ``clipfuse train`` with ``auto`` precision on the GPU for half the steps,
2. ``--resume`` to the full steps,
3. ``clipfuse eval`` of the last checkpoint,
4. ``clipfuse bench`` on the GPU (every training precision x layout; inference latency),
5. ``clipfuse export`` to ONNX,
6. a one-GPU ``ddp`` training,

and writes ``gpu_check.json`` after every step (a step that fails or a limit that cuts the
run short leaves the report of the steps before it). ``--device cpu`` runs the same steps on
the CPU (the suite does, on tiny data, so the script cannot rot unseen).
"""

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WHEELS = [  # what the GPU image lacks (its PyTorch, Lightning, timm, onnx... are used as they are)
    "pydantic==2.14.4",
    "pydantic-core==2.50.5",
    "annotated-types==0.8.0",
    "typing-inspection==0.4.5",
    "albumentations==2.0.8",
    "albucore==0.0.24",
    "simsimd==6.5.16",
    "stringzilla==5.3.2",
]
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"]
CONFIG = "configs/plain_mobilenetv2_camvid_256x320_800.yaml"


def prepare(
    shared: Path, dest: Path, train_images: int = 48, val_images: int = 16, wheels: bool = True
) -> None:
    """Copy the CamVid subset and the backbone weights into ``dest``; download the wheels."""
    camvid, out = shared / "data" / "camvid", dest / "shared" / "data" / "camvid"
    for split, count in (("train", train_images), ("val", val_images)):
        lines = (camvid / f"{split}.txt").read_text().splitlines()[:count]
        for folder in (split, f"{split}annot"):
            (out / folder).mkdir(parents=True, exist_ok=True)
        for line in lines:
            for path, folder in zip(line.split(), (split, f"{split}annot"), strict=True):
                shutil.copy2(camvid / folder / Path(path).name, out / folder)
        (out / f"{split}.txt").write_text("\n".join(lines) + "\n")
    shutil.copy2(camvid / "palette11.png", out)
    weights = dest / "shared" / "weights"
    weights.mkdir(parents=True, exist_ok=True)
    shutil.copy2(shared / "weights" / "mobilenetv2_100_in1k.pth", weights)
    if not wheels:
        return
    platforms = [flag for name in PLATFORMS for flag in ("--platform", name)]
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"]
        + ["--python-version", "3.12", "--implementation", "cp", *platforms]
        + ["-d", str(dest / "wheels"), *WHEELS],
        check=True,
    )


def _clipfuse(*args: str) -> list[str]:
    return [sys.executable, "-m", "clipfuse.cli", *args]


def _images_per_s(output: str) -> float | None:
    """The last progress line's img/s (measured over the steps since the line before)."""
    rates = re.findall(r"([0-9.]+) img/s", output)
    return float(rates[-1]) if rates else None


def run(
    out: Path,
    device: str,
    steps: int,
    config: str,
    overrides: list[str],
    bench: list[str],
    export: list[str] = (),
) -> dict:
    """Run the six steps into ``out``; the report is ``out/gpu_check.json``."""
    out.mkdir(parents=True, exist_ok=True)
    import torch

    report: dict = {
        "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
        "torch": torch.__version__,
        "config": config,
        "steps": [],
    }
    accelerator = "gpu" if device == "cuda" else "cpu"
    run_dir, ddp_dir, checkpoint = out / "run", out / "ddp", out / "run/checkpoints/last.ckpt"
    half = max(1, steps // 2)
    schedule = [f"train.checkpoint_every={half}", "train.progress_bar=false"]
    plan = [
        (
            "train",
            _clipfuse("train", "--config", config, "--out", str(run_dir), *overrides)
            + [f"train.accelerator={accelerator}", f"train.max_steps={half}"]
            + [f"train.val_every={half}", *schedule],
        ),
        (
            "resume",
            _clipfuse("train", "--out", str(run_dir), "--resume")
            + [f"train.max_steps={steps}", f"train.val_every={steps}"],
        ),
        (
            "eval",
            _clipfuse("eval", "--model", str(checkpoint), "--output", str(out / "eval.json")),
        ),
        (
            "bench",
            _clipfuse("bench", "--config", config, "--device", device, *bench)
            + ["--output", str(out / "bench.json"), *overrides],
        ),
        (
            "export",
            _clipfuse("export", "--model", str(checkpoint), "--out", str(out / "model.onnx"))
            + list(export),
        ),
        (
            "ddp",
            _clipfuse("train", "--config", config, "--out", str(ddp_dir), *overrides)
            + [f"train.accelerator={accelerator}", "train.devices=1", "train.strategy=ddp"]
            + [f"train.max_steps={half}", f"train.val_every={half}", *schedule],
        ),
    ]
    for name, argv in plan:
        began = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT)
        output = done.stdout + done.stderr
        step = {
            "step": name,
            "rc": done.returncode,
            "seconds": round(time.perf_counter() - began, 1),
        }
        step["notes"] = [line for line in done.stderr.splitlines() if line.startswith("note:")]
        if name in ("train", "resume", "ddp"):
            step["images_per_s"] = _images_per_s(output)
        if done.returncode:
            step["output_tail"] = output[-3000:]
        report["steps"].append(step)
        for key, path in (("metrics", run_dir / "metrics.json"), ("eval", out / "eval.json")):
            if path.is_file():
                report[key] = {
                    k: v for k, v in json.loads(path.read_text()).items() if k != "per_class"
                }
        if (out / "bench.json").is_file():
            bench_result = json.loads((out / "bench.json").read_text())
            report["bench"] = {"machine": bench_result["machine"], "rows": bench_result["rows"]}
        (out / "gpu_check.json.partial").write_text(json.dumps(report, indent=2))
        os.replace(out / "gpu_check.json.partial", out / "gpu_check.json")
        print(f"{name}: rc {done.returncode}, {step['seconds']} s", flush=True)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    prep = commands.add_parser("prepare", help="lay out .gpu-check/ (here, with ../shared)")
    prep.add_argument("--shared", default=str(ROOT.parent / "shared"))
    prep.add_argument("--dest", default=str(ROOT / ".gpu-check"))
    go = commands.add_parser("run", help="run the check (on the GPU machine)")
    go.add_argument("--out", required=True, help="folder of the runs and gpu_check.json")
    go.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    go.add_argument("--steps", type=int, default=300, help="training steps (default 300)")
    go.add_argument("--config", default=CONFIG)
    go.add_argument("--set", nargs="*", default=[], help="overrides for every training")
    go.add_argument(
        "--bench",
        default="--size 360 480 --batch 1 8 --train-batch 8 --train-precision 32-true "
        "bf16-mixed 16-mixed --train-memory-format contiguous channels_last --paths eager-fp32 "
        "eager-fp32-cl eager-bf16 eager-bf16-cl",
        help="clipfuse bench's options, in one string",
    )
    go.add_argument("--export", default="", help="clipfuse export's options, in one string")
    args = parser.parse_args(argv)
    if args.command == "prepare":
        prepare(Path(args.shared), Path(args.dest))
        return 0
    bench, export = shlex.split(args.bench), shlex.split(args.export)
    report = run(Path(args.out), args.device, args.steps, args.config, args.set, bench, export)
    return 0 if all(step["rc"] == 0 for step in report["steps"]) else 1


if __name__ == "__main__":
    sys.exit(main())
