"""Generalized zero-shot scores: seen and unseen mIoU, their harmonic mean, calibrated stacking.

Every class is predicted at once (seen and unseen names together). *Calibrated stacking*
(Chao et al., ECCV 2016, as zero-shot segmentation papers report it) subtracts a constant
``gamma`` from the seen classes' log-probabilities before the argmax, trading seen accuracy for
unseen; :class:`CalibratedStacking` scores a grid of ``gamma`` in one pass over the data.

The ``gamma`` reported as *calibrated* is chosen without unseen labels
(:func:`choose_gamma`): the largest on the grid at which the seen mIoU is at most
``seen_drop`` points below its value at ``gamma = 0``. The best harmonic mean on the grid is
reported beside it as the *oracle* (it reads the unseen labels).
"""

import math
from collections.abc import Sequence

import numpy as np
import torch

from clipfuse.data.base import IGNORE_INDEX
from clipfuse.errors import ClipfuseError
from clipfuse.evaluation.metrics import confmat_scores, results_to_json

DEFAULT_GAMMAS = tuple(0.5 * step for step in range(41))
"""0, 0.5, ..., 20: log-probability offsets (a score map at temperature 0.07 spans about 28)."""
DEFAULT_SEEN_DROP = 1.0
"""mIoU points the seen classes may lose to the chosen ``gamma``."""


def harmonic_mean(seen: float | None, unseen: float | None) -> float | None:
    """``2 s u / (s + u)``; None when either is undefined, 0 when both are 0."""
    if seen is None or unseen is None:
        return None
    return 0.0 if seen + unseen == 0 else 2 * seen * unseen / (seen + unseen)


def _mean(values: np.ndarray) -> float | None:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else None


def split_scores(iou: np.ndarray, seen: np.ndarray) -> dict[str, float | None]:
    """``seen_mIoU``, ``unseen_mIoU`` and their ``hmean`` from per-class IoUs (percent)."""
    seen_miou, unseen_miou = _mean(iou[seen]), _mean(iou[~seen])
    return {
        "seen_mIoU": seen_miou,
        "unseen_mIoU": unseen_miou,
        "hmean": harmonic_mean(seen_miou, unseen_miou),
    }


class CalibratedStacking:
    """Confusion matrices of the argmax after subtracting each ``gamma`` from the seen
    classes' log-probabilities.

    Args:
        seen: per class, whether it is seen (its name was trained).
        gammas: the offsets to score; 0 is always among them.
    """

    def __init__(self, seen: Sequence[bool], gammas: Sequence[float] = DEFAULT_GAMMAS) -> None:
        self.seen = np.asarray(seen, dtype=bool)
        if any(not math.isfinite(g) or g < 0 for g in gammas):
            raise ClipfuseError(f"gammas: expected finite values >= 0, got {list(gammas)}")
        self.gammas = sorted({0.0, *map(float, gammas)})
        k = len(self.seen)
        self.confmats = np.zeros((len(self.gammas), k, k), dtype=np.int64)

    def update(self, probabilities: np.ndarray, target: np.ndarray) -> None:
        """Add one image: ``probabilities`` K x H x W and ``target`` H x W (255 ignored)."""
        k = len(self.seen)
        valid = target != IGNORE_INDEX
        labels = target[valid].astype(np.int64)
        log_probs = np.log(np.maximum(probabilities[:, valid], 1e-30))
        if self.seen.all() or not self.seen.any():
            # one group only: the offset changes nothing
            predicted = log_probs.argmax(0)
            counts = np.bincount(labels * k + predicted, minlength=k * k).reshape(k, k)
            self.confmats += counts
            return
        seen_ids, unseen_ids = np.flatnonzero(self.seen), np.flatnonzero(~self.seen)
        seen_best = log_probs[seen_ids].max(0)
        unseen_best = log_probs[unseen_ids].max(0)
        seen_pick = seen_ids[log_probs[seen_ids].argmax(0)]
        unseen_pick = unseen_ids[log_probs[unseen_ids].argmax(0)]
        margin = seen_best - unseen_best  # an unseen class wins once gamma exceeds it
        for index, gamma in enumerate(self.gammas):
            predicted = np.where(margin < gamma, unseen_pick, seen_pick)
            counts = np.bincount(labels * k + predicted, minlength=k * k)
            self.confmats[index] += counts.reshape(k, k)

    def results(self, gamma: float, class_names: Sequence[str]) -> dict:
        """``clipfuse eval --json``'s metrics at ``gamma`` (on the grid), with the seen /
        unseen split (:func:`split_scores`)."""
        scores = confmat_scores(torch.from_numpy(self.confmats[self.gammas.index(gamma)]))
        split = split_scores(scores["IoU"].numpy(), self.seen)
        return {"gamma": gamma, **results_to_json(scores, class_names), **split}

    def curve(self) -> list[dict]:
        """One point per ``gamma``: ``{"gamma", "mIoU", "seen_mIoU", "unseen_mIoU", "hmean"}``."""
        points = []
        for gamma, confmat in zip(self.gammas, self.confmats, strict=True):
            scores = confmat_scores(torch.from_numpy(confmat))
            miou = scores["mIoU"]
            point = {"gamma": gamma, "mIoU": None if math.isnan(miou) else miou}
            points.append({**point, **split_scores(scores["IoU"].numpy(), self.seen)})
        return points


def choose_gamma(curve: Sequence[dict], seen_drop: float = DEFAULT_SEEN_DROP) -> float:
    """The largest ``gamma`` of ``curve`` whose seen mIoU is within ``seen_drop`` points of
    the seen mIoU at ``gamma = 0`` (reads seen labels only); 0 without seen or unseen
    classes (the offset changes nothing)."""
    base = next(point for point in curve if point["gamma"] == 0.0)["seen_mIoU"]
    if base is None or all(point["unseen_mIoU"] is None for point in curve):
        return 0.0
    within = [
        point["gamma"]
        for point in curve
        if point["seen_mIoU"] is not None and point["seen_mIoU"] >= base - seen_drop
    ]
    return max(within)


def oracle_gamma(curve: Sequence[dict]) -> float | None:
    """The ``gamma`` of the best harmonic mean on ``curve`` (reads the unseen labels)."""
    scored = [point for point in curve if point["hmean"] is not None]
    return max(scored, key=lambda point: point["hmean"])["gamma"] if scored else None
