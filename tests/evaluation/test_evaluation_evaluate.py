"""evaluate (clipfuse.evaluation.evaluate): a loader of (images, full-resolution masks) to metrics."""

import pytest
import torch

from clipfuse.evaluation import InferenceConfig, evaluate

K = 3


def _loader() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Two batches of constant images (value = class) with masks at twice the resolution."""
    batches = []
    for classes in ([0, 1], [2, 1]):
        images = torch.tensor(classes, dtype=torch.float32).view(2, 1, 1, 1).expand(2, 3, 4, 6)
        masks = torch.tensor(classes).view(2, 1, 1).expand(2, 8, 12).clone()
        masks[:, 0, :] = 255
        batches.append((images, masks))
    return batches


@pytest.mark.parametrize("progress", [True, False])
def test_evaluate_resizes_to_the_masks_and_runs_in_inference_mode(progress: bool) -> None:
    seen: list[tuple[tuple[int, ...], bool]] = []

    def model_fn(x: torch.Tensor) -> torch.Tensor:
        seen.append((tuple(x.shape), torch.is_inference_mode_enabled()))
        labels = x[:, 0].round().long()
        return 10 * torch.nn.functional.one_hot(labels, K).permute(0, 3, 1, 2).float()

    results = evaluate(model_fn, _loader(), K, InferenceConfig(flip=True), progress=progress)
    assert results["mIoU"] == results["aAcc"] == results["mAcc"] == 100.0
    assert results["confmat"].diagonal().tolist() == [84, 168, 84]  # 7 x 12 scored pixels each
    assert seen == [((2, 3, 4, 6), True)] * 4


def test_evaluate_counts_mistakes() -> None:
    def always_zero(x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(x.shape[0], K, *x.shape[-2:])
        logits[:, 0] = 1
        return logits

    results = evaluate(always_zero, _loader(), K, InferenceConfig(), progress=False)
    assert results["aAcc"] == pytest.approx(25.0)
    assert results["IoU"].tolist() == pytest.approx([25.0, 0.0, 0.0])
