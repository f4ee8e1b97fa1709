"""Seen / unseen scores and calibrated stacking on hand-made probabilities."""

import numpy as np
import pytest

from clipfuse import ClipfuseError
from clipfuse.evaluation.zero_shot import (
    CalibratedStacking,
    choose_gamma,
    harmonic_mean,
    oracle_gamma,
)

NAMES = ["coat", "jacket", "blazer"]  # blazer unseen


def _probabilities(log_margins: list[float]) -> np.ndarray:
    """3 x 1 x N: class 0 (seen) best, class 2 (unseen) ``margin`` below it in log space."""
    margins = np.asarray(log_margins)
    logits = np.stack([np.zeros_like(margins), np.full_like(margins, -50.0), -margins])
    probabilities = np.exp(logits) / np.exp(logits).sum(0)
    return probabilities[:, None, :]


def test_stacking_moves_pixels_to_unseen_past_their_margin():
    stacking = CalibratedStacking([True, True, False], gammas=[1.5, 5.0])
    target = np.array([[0, 2, 2, 255]], dtype=np.uint8)
    stacking.update(_probabilities([3.0, 1.0, 1.0, 0.5]), target)
    assert stacking.gammas == [0.0, 1.5, 5.0]
    curve = {point["gamma"]: point for point in stacking.curve()}
    # gamma 0: all coat; 1.5: the margins of 1 flip to blazer (both right); 5: all blazer
    assert curve[0.0]["unseen_mIoU"] == 0 and curve[0.0]["seen_mIoU"] == pytest.approx(100 / 3)
    at_15 = stacking.results(1.5, NAMES)
    assert [c["IoU"] for c in at_15["per_class"]] == [100.0, None, 100.0]
    assert at_15["hmean"] == 100.0
    assert curve[5.0]["unseen_mIoU"] == pytest.approx(200 / 3) and curve[5.0]["seen_mIoU"] == 0
    assert curve[5.0]["hmean"] == 0.0 and oracle_gamma(stacking.curve()) == 1.5


def test_one_group_only_is_a_plain_argmax():
    stacking = CalibratedStacking([True, True, True], gammas=[2.0])
    stacking.update(_probabilities([1.0, -1.0]), np.array([[0, 2]], dtype=np.uint8))
    results = stacking.results(2.0, NAMES)
    assert results["mIoU"] == stacking.results(0.0, NAMES)["mIoU"] == pytest.approx(100.0)
    assert results["unseen_mIoU"] is None and results["hmean"] is None


def test_chosen_gamma_reads_seen_scores_only():
    curve = [
        {"gamma": 0.0, "seen_mIoU": 50.0, "unseen_mIoU": 0.0, "hmean": 0.0},
        {"gamma": 1.0, "seen_mIoU": 49.5, "unseen_mIoU": 5.0, "hmean": 9.1},
        {"gamma": 2.0, "seen_mIoU": 48.0, "unseen_mIoU": 20.0, "hmean": 28.2},
    ]
    assert choose_gamma(curve, seen_drop=1.0) == 1.0
    assert choose_gamma(curve, seen_drop=2.0) == 2.0
    assert harmonic_mean(40.0, 10.0) == pytest.approx(16.0) and harmonic_mean(None, 1) is None
    with pytest.raises(ClipfuseError, match="gammas"):
        CalibratedStacking([True, False], gammas=[-1.0])
