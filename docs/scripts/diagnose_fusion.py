"""Why does the Conv-Former train slower than plain Semantic FPN? (issue 12, docs/research/results.md)

Trains each named variant of the CamVid demo config and records, every ``--every`` steps, the
gradient norm of each part of the model (backbone, language head, decoder), the training
losses, and at every validation (``--val-every``) the per-class IoU. Writes
``diagnosis.json`` and ``diagnosis.png`` into ``--out``.

    python docs/scripts/diagnose_fusion.py --out docs/research/results/diagnosis \\
        --variants fpn convformer convformer_gated [--steps 140] [--val-every 35] [--plot-only]
"""

import argparse
import json
import tempfile
from pathlib import Path

import lightning as L
import torch

from clipfuse.config import load_config
from clipfuse.engine import train

CONVFORMER = "configs/convformer_mobilenetv2_camvid_192x256_140.yaml"
VARIANTS = {  # name: (config, overrides)
    "fpn": ("configs/plain_mobilenetv2_camvid_192x256_140.yaml", []),
    "convformer": (CONVFORMER, ["model.head_kwargs.gate_init=null"]),  # the paper's head
    "convformer_gated": (CONVFORMER, ["model.head_kwargs.gate_init=0.0001"]),
    "convformer_headlr10": (
        CONVFORMER,
        ["model.head_kwargs.gate_init=null", "train.head_lr_mult=10"],
    ),
}
PARTS = ("backbone", "head", "decoder")


class Recorder(L.Callback):
    """Gradient norms per part and losses every ``every`` steps; per-class IoU at validations."""

    def __init__(self, every: int) -> None:
        self.every = every
        self.steps: list[dict] = []
        self.validations: list[dict] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        step = trainer.global_step + 1
        if step % self.every and step != 1:
            return
        norms = {}
        for part in PARTS:
            grads = [
                p.grad.detach().float().norm() ** 2
                for name, p in pl_module.model.named_parameters()
                if name.startswith(part + ".") and p.grad is not None
            ]
            norms[part] = float(torch.stack(grads).sum().sqrt()) if grads else None
        logged = {
            k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/")
        }
        self.steps.append({"step": step, "grad_norm": norms, **logged})

    def on_validation_end(self, trainer, pl_module) -> None:
        results = pl_module.last_results
        iou = [float(x) for x in results["IoU"]]
        self.validations.append(
            {"step": trainer.global_step, "mIoU": float(results["mIoU"]), "IoU": iou}
        )


def run(name: str, steps: int, val_every: int, every: int, seed: int) -> dict:
    base, overrides = VARIANTS[name]
    overrides = overrides + [
        f"train.max_steps={steps}",
        f"train.val_every={val_every}",
        f"train.checkpoint_every={steps}",
        "train.progress_bar=false",
        f"seed={seed}",
    ]
    config = load_config(base, overrides)
    recorder = Recorder(every)
    with tempfile.TemporaryDirectory() as folder:
        train(config, Path(folder) / name, callbacks=[recorder])
    return {
        "name": name,
        "overrides": overrides,
        "steps": recorder.steps,
        "validations": recorder.validations,
    }


def plot(results: list[dict], class_names: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    for index, result in enumerate(results):
        colour = f"C{index}"  # one colour per run, one line style per part
        steps = [row["step"] for row in result["steps"]]
        for part, style in zip(PARTS, ("-", "--", ":"), strict=True):
            values = [row["grad_norm"][part] for row in result["steps"]]
            if any(v is not None for v in values):
                axes[0].plot(steps, values, style, color=colour, label=f"{result['name']} {part}")
        axes[1].plot(
            steps, [row.get("train/loss_seg") for row in result["steps"]], label=result["name"]
        )
        vals = result["validations"]
        axes[2].plot(
            [v["step"] for v in vals], [v["mIoU"] for v in vals], "o-", label=result["name"]
        )
    axes[0].set(yscale="log", xlabel="step", title="gradient norm per part")
    axes[1].set(xlabel="step", title="training loss (segmentation CE)")
    axes[2].set(xlabel="step", ylabel="CamVid val mIoU", title="validation mIoU")
    for ax in axes:
        ax.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument(
        "--variants",
        nargs="+",
        default=["fpn", "convformer", "convformer_gated"],
        choices=sorted(VARIANTS),
    )
    parser.add_argument("--steps", type=int, default=140)
    parser.add_argument("--val-every", type=int, default=35)
    parser.add_argument("--every", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot-only", action="store_true", help="redraw from diagnosis.json")
    args = parser.parse_args()
    out = Path(args.out)
    if args.plot_only:
        payload = json.loads((out / "diagnosis.json").read_text())
        plot(payload["runs"], payload["class_names"], out / "diagnosis.png")
        return
    out.mkdir(parents=True, exist_ok=True)
    results = [
        run(name, args.steps, args.val_every, args.every, args.seed) for name in args.variants
    ]
    from clipfuse.data import dataset_classes

    class_names = dataset_classes("camvid")
    payload = {"seed": args.seed, "class_names": class_names, "runs": results}
    (out / "diagnosis.json").write_text(json.dumps(payload, indent=2))
    plot(results, class_names, out / "diagnosis.png")


if __name__ == "__main__":
    main()
