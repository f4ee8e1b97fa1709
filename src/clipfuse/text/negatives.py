"""Negative names for LSeg's text classifier (``text.negatives``): names of a vocabulary, e.g.
LVIS's 1203 in the CLIP ViT-B/32 bank, that are never a target. Each training step scores the
pixels against the class vectors and a draw of these names' vectors, so the cross-entropy
pushes every labelled pixel away from many names it is not, instead of only from the few
trained ones (issue 21, test 1: keeping the pixel embeddings in CLIP's geometry rather than
collapsing them onto the seen names; contrastive negatives as in open-vocabulary detectors).

The vocabulary is the same for every method of a grid: a name is left out when, in the
vocabulary bank's own CLIP space, it lies within ``text.negatives_max_cosine`` of a class name
or of a held-out (``unseen``) name, so no negative is a synonym of a class the model is asked
to find. The kept names are then embedded by the run's own text encoder (random vectors for a
``random:`` run), like the class names.
"""

from collections.abc import Sequence

import torch
from torch.nn import functional as F

from clipfuse.config import resolve_path
from clipfuse.errors import ClipfuseError, announce
from clipfuse.seeding import with_resolved_draws
from clipfuse.text.bank import bank_pairs, read_bank, resolve_bank_path
from clipfuse.text.base import normalize_name
from clipfuse.text.cache import embed_class_names
from clipfuse.text.resolve import text_spec


def negative_names(config: dict, class_names: Sequence[str]) -> list[str]:
    """The names of the ``text.negatives`` bank (one ``.npy`` with its ``.json``) that are
    more than ``text.negatives_max_cosine`` from every class and held-out name found in it
    (under ``text.aliases``), in bank order. Announced on stderr."""
    text = config["text"]
    pairs = bank_pairs(resolve_bank_path(str(resolve_path(text["negatives"]))))
    if len(pairs) != 1:
        raise ClipfuseError(
            f"text.negatives {text['negatives']}: expected one bank file (.npy), not a folder"
        )
    array_path, names_path = pairs[0]
    vectors, names = read_bank(array_path, names_path)
    row_of = {normalize_name(name): k for k, name in enumerate(names)}
    aliases = text["aliases"] or {}
    held_out = config["data"]["dataset_kwargs"].get("unseen") or []
    targets = [normalize_name(aliases.get(name, name)) for name in [*class_names, *held_out]]
    rows = sorted({row_of[target] for target in targets if target in row_of})
    unit = F.normalize(torch.from_numpy(vectors).float(), dim=1)
    closest = (unit @ unit[rows].T).max(1).values if rows else torch.full((len(names),), -1.0)
    limit = text["negatives_max_cosine"]
    kept = [name for name, cosine in zip(names, closest.tolist(), strict=True) if cosine < limit]
    if not kept:
        raise ClipfuseError(
            f"text.negatives {array_path}: no name is below cosine {limit} of every class name"
        )
    announce(
        f"text.negatives: {len(kept)} of the {len(names)} names of {array_path.name} (the "
        f"others lie within cosine {limit} of one of the {len(rows)} class or held-out names "
        f"found there; names not in it: {len(targets) - len(rows)})"
    )
    return kept


def negative_embeddings(
    config: dict, class_names: Sequence[str], text_classifier: bool
) -> torch.Tensor | None:
    """N x Ct vectors of :func:`negative_names` by the run's text encoder (its seed's draw for
    ``random:``; never shuffled), or None without ``text.negatives``. They need LSeg's text
    classifier (``model.text_classifier: true``), where a name is one more row of logits."""
    if config["text"]["negatives"] is None:
        return None
    if not text_classifier:
        raise ClipfuseError(
            "config key text.negatives is set: expected model.text_classifier: true too (the "
            "negative names are extra rows of the text classifier's logits)"
        )
    names = negative_names(config, class_names)
    spec = text_spec(with_resolved_draws(config), list(class_names))
    return embed_class_names(spec, names, template=config["text"]["template"])
