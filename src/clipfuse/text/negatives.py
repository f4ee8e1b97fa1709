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
from clipfuse.errors import ClipfuseError, announce, one_line
from clipfuse.seeding import with_resolved_draws
from clipfuse.text.aliases import apply_aliases
from clipfuse.text.bank import bank_pairs, read_bank, resolve_bank_path
from clipfuse.text.base import normalize_name
from clipfuse.text.cache import embed_class_names
from clipfuse.text.resolve import text_spec


def negative_names(config: dict, class_names: Sequence[str]) -> list[str]:
    """The names of the ``text.negatives`` bank (one ``.npy`` with its ``.json``) that are
    more than ``text.negatives_max_cosine`` from every class and held-out name found in it
    (under ``text.aliases``), in bank order. Announced on stderr."""
    text = config["text"]
    where = f"text.negatives {text['negatives']}"
    try:
        path = resolve_bank_path(str(resolve_path(text["negatives"])))
        if path.is_dir():
            raise ClipfuseError(f"{path} is a folder: expected one bank file (.npy)")
        ((array_path, names_path),) = bank_pairs(path)
        vectors, names = read_bank(array_path, names_path)
    except ClipfuseError as error:
        raise ClipfuseError(f"{where}: {one_line(error)}") from error
    row_of = {normalize_name(name): k for k, name in enumerate(names)}
    held_out = config["data"]["dataset_kwargs"].get("unseen") or []
    named = apply_aliases([*class_names, *held_out], text["aliases"] or None)
    targets = [normalize_name(name) for name in named]
    rows = sorted({row_of[target] for target in targets if target in row_of})
    absent = [name for name, target in zip(named, targets, strict=True) if target not in row_of]
    unit = F.normalize(torch.from_numpy(vectors).float(), dim=1)
    closest = (unit @ unit[rows].T).max(1).values if rows else torch.full((len(names),), -1.0)
    limit = text["negatives_max_cosine"]
    kept = [name for name, cosine in zip(names, closest.tolist(), strict=True) if cosine < limit]
    if not kept:
        raise ClipfuseError(f"{where}: no name is below cosine {limit} of every class name")
    announce(
        f"text.negatives: {len(kept)} of the {len(names)} names of {array_path.name} (the "
        f"others lie within cosine {limit} of one of the {len(rows)} class or held-out names "
        f"found there; not in it: {', '.join(absent) or 'none'})"
    )
    return kept


def negative_embeddings(config: dict, class_names: Sequence[str]) -> torch.Tensor | None:
    """N x Ct vectors of :func:`negative_names` by the run's text encoder (its seed's draw for
    ``random:``; never shuffled), or None without ``text.negatives``. The config has LSeg's
    text classifier (``model.text_classifier: true``, checked by its schema), where a name is
    one more row of logits."""
    if config["text"]["negatives"] is None:
        return None
    names = negative_names(config, class_names)
    spec = text_spec(with_resolved_draws(config), list(class_names))
    try:
        return embed_class_names(spec, names, template=config["text"]["template"])
    except ClipfuseError as error:
        raise ClipfuseError(
            f"text.negatives {config['text']['negatives']}: {one_line(error)}"
        ) from error
