"""Is bf16 inference exact enough? fp32 against bf16 autocast on the real CamVid val images.

For each checkpoint, every val image is predicted twice with the checkpoint's own eval settings
(resize, whole-image inference), once with ``eval.precision=32-true`` and once with
``bf16-mixed``: the fraction of pixels whose predicted class agrees, and the mIoU of each.
Results in docs/research/speed.md.

    python docs/scripts/precision_agreement.py CKPT [CKPT ...] [--json out.json]
"""

import argparse
import json

import torch

from clipfuse.build import create_model_from_config
from clipfuse.engine.datamodule import SegmentationDataModule
from clipfuse.evaluation import InferenceConfig, SegmentationMetrics, infer_probabilities
from clipfuse.saved_model import load_checkpoint


@torch.inference_mode()
def agreement(checkpoint: str) -> dict:
    config, class_names, state = load_checkpoint(checkpoint)
    model = create_model_from_config(
        config, class_names, state.get("head.text_embeddings"), pretrained=False
    )
    model.load_state_dict(state)
    model.eval()
    data = SegmentationDataModule(
        mean=model.backbone.mean, std=model.backbone.std, **{**config["data"], "num_workers": 0}
    )
    settings = {**InferenceConfig.from_dict(config["eval"]).as_kwargs()}
    metrics = {p: SegmentationMetrics(len(class_names)) for p in ("32-true", "bf16-mixed")}
    same = total = 0
    for images, masks in data.val_dataloader():
        labels = {}
        for precision, metric in metrics.items():
            settings["precision"] = precision
            probabilities = infer_probabilities(
                lambda x: model(x)["logits"],
                images,
                len(class_names),
                output_size=tuple(masks.shape[-2:]),
                **settings,
            )
            labels[precision] = probabilities.argmax(1)
            metric.update(labels[precision], masks)
        same += int((labels["32-true"] == labels["bf16-mixed"]).sum())
        total += labels["32-true"].numel()
    results = {p: float(metric.compute()["mIoU"]) for p, metric in metrics.items()}
    return {
        "checkpoint": checkpoint,
        "method": config["model"]["method"],
        "pixels": total,
        "agreement": same / total,
        "mIoU_fp32": results["32-true"],
        "mIoU_bf16": results["bf16-mixed"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    torch.set_num_threads(2)
    rows = [agreement(path) for path in args.checkpoints]
    for row in rows:
        print(
            f"{row['checkpoint']}: {100 * row['agreement']:.3f}% of {row['pixels']} pixels agree; "
            f"mIoU fp32 {row['mIoU_fp32']:.2f}, bf16 {row['mIoU_bf16']:.2f}"
        )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(
                {"eval_precisions": ["32-true", "bf16-mixed"], "rows": rows}, handle, indent=2
            )


if __name__ == "__main__":
    main()
