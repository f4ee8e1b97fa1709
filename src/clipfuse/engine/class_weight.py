"""``train.class_weight`` as a run trains with it: ``balanced`` made concrete once, before
training, from the pixel counts of the training set's masks, and written into the run's
``config.yaml`` as the list it resolved to, so a resumed run reads the list back and never
counts again (nor differently, should the data have changed)."""

import math
from collections.abc import Sequence

from clipfuse.data import class_pixel_counts, create_config_dataset
from clipfuse.errors import ClipfuseError, announce

# ENet's constant: a class of frequency p weighs 1 / ln(1.02 + p), at most 1 / ln(1.02) ~ 50.5.
ENET_C = 1.02


def balanced_class_weights(pixel_counts: Sequence[int]) -> list[float]:
    """ENet's class weights (Paszke et al. 2016, "ENet: A Deep Neural Network Architecture for
    Real-Time Semantic Segmentation", Sec. 4: ``w_c = 1 / ln(1.02 + p_c)``, ``p_c`` the share
    of the labelled pixels that are class ``c``), scaled to a mean of 1 and rounded to 4
    decimals (what the run records is exactly what it trains with)."""
    total = sum(pixel_counts)
    if total <= 0:
        raise ClipfuseError(
            "train.class_weight balanced: the training masks have no labelled pixel: expected "
            "at least one pixel of a class"
        )
    weights = [1 / math.log(ENET_C + count / total) for count in pixel_counts]
    mean = sum(weights) / len(weights)
    return [round(weight / mean, 4) for weight in weights]


def with_resolved_class_weight(config: dict) -> dict:
    """``config`` with ``train.class_weight: balanced`` replaced by the weights of its
    training split (:func:`balanced_class_weights` of one pass over the masks), announced;
    any other value as it is."""
    train = config["train"]
    if train["class_weight"] != "balanced":
        return config
    dataset = create_config_dataset(config, "train")
    counts = class_pixel_counts(dataset)
    weights = balanced_class_weights(list(counts.values()))
    rarest = list(counts)[weights.index(max(weights))]
    announce(
        f"train.class_weight balanced: ENet weights of the pixel counts of {len(dataset)} "
        f"training masks, {min(weights)} to {max(weights)} ({rarest}), recorded in config.yaml"
    )
    return {**config, "train": {**train, "class_weight": weights}}


def with_saved_class_weight(planned: dict, saved: dict) -> dict:
    """``planned`` (the config a resume was asked for) with ``train.class_weight: balanced``
    read as the list the run being resumed resolved it to (``saved``, its config.yaml)."""
    weight = saved["train"].get("class_weight")
    if planned["train"]["class_weight"] != "balanced" or not isinstance(weight, list):
        return planned
    return {**planned, "train": {**planned["train"], "class_weight": weight}}
