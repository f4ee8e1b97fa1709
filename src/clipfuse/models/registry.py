"""Named model variants, as timm's ``list_models`` / ``create_model(name)``: each variant is
registered where its method is defined (``plain`` in :mod:`clipfuse.models.factory`,
``convformer`` in :mod:`clipfuse.models.convformer`, ``denseclip`` in
:mod:`clipfuse.models.denseclip`) and names the shipped config that defines it.

One source: a variant IS its config's ``model`` section (method, backbone, decoder and their
kwargs) and ``text`` section (how the class names are embedded), on the schema's defaults
for the rest (:data:`clipfuse.config.DEFAULTS`): no number is written twice, and the variant
is exactly the model the config trains and the results in docs/research/results.md measured. The
training recipe (``data``, ``train``, ``eval``) stays the config file's business.
"""

import difflib
import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass

from clipfuse.errors import ClipfuseError

# The sections of a config that make a variant; the others keep their defaults.
VARIANT_SECTIONS = ("model", "text")

# The paper's rows (docs/research/method.md Sec. 6) on Semantic FPN, each with its ADE20K config
# ``<method>_<backbone>_ade20k_512x512_80k``; Swin-T runs on UperNet.
PAPER_BACKBONES = ("resnet50", "resnet101", "xception", "efficientformer", "vit-b16")


@dataclass(frozen=True)
class Variant:
    """A named model: ``config`` is the name of a shipped config
    (:func:`clipfuse.config_files.shipped_config`) or a
    mapping of the sections :data:`VARIANT_SECTIONS` (a user's own variant)."""

    name: str
    config: str | Mapping


_VARIANTS: dict[str, Variant] = {}


def register_model(name: str, config: str | Mapping) -> Variant:
    """Register the variant ``name`` defined by ``config`` (a shipped config's stem, e.g.
    ``plain-w128_mobilenetv2_camvid_256x320_5200``, or a mapping with ``model`` and ``text``
    sections); a name registered twice is a :class:`ClipfuseError`."""
    if name in _VARIANTS:
        raise ClipfuseError(f"model {name!r} is already registered")
    _VARIANTS[name] = Variant(name, config)
    return _VARIANTS[name]


def register_paper_rows(method: str) -> None:
    """Register ``<method>_<backbone>`` for each of :data:`PAPER_BACKBONES` (``vit-b16`` as
    ``vit_b16``) and ``<method>_upernet_swin_t``, from their ADE20K configs."""
    for backbone in PAPER_BACKBONES:
        name = f"{method}_{backbone.replace('-', '_')}"
        register_model(name, f"{method}_{backbone}_ade20k_512x512_80k")
    register_model(f"{method}_upernet_swin_t", f"{method}-upernet_swin-t_ade20k_512x512_80k")


def variants(pattern: str = "*") -> list[Variant]:
    """The registered variants whose names match ``pattern``, sorted by name."""
    return [_VARIANTS[name] for name in list_models(pattern)]


def list_models(pattern: str = "*") -> list[str]:
    """The registered variant names matching the shell-style ``pattern`` (:mod:`fnmatch`,
    e.g. ``"convformer_*"``), sorted."""
    return sorted(name for name in _VARIANTS if fnmatch.fnmatchcase(name, pattern))


def is_model(name: str) -> bool:
    """Whether ``name`` is a registered variant."""
    return name in _VARIANTS


def unknown_model_error(name: str) -> ClipfuseError:
    """The one-line error for a name that is no variant, naming the closest ones."""
    close = difflib.get_close_matches(name, list(_VARIANTS), n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else "see clipfuse.list_models()"
    return ClipfuseError(f"unknown model {name!r}: {hint}")


def variant_config(name: str) -> dict:
    """The full, validated run config of variant ``name``: its config's ``model`` and
    ``text`` sections on the defaults (:func:`clipfuse.config.with_defaults`)."""
    from clipfuse.config import load_config, with_defaults
    from clipfuse.config_files import shipped_config

    if name not in _VARIANTS:
        raise unknown_model_error(name)
    source = _VARIANTS[name].config
    if isinstance(source, str):
        source = load_config(shipped_config(source))
    return with_defaults({key: source[key] for key in VARIANT_SECTIONS if key in source})
