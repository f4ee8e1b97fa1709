"""Text-encoder specs: ``<prefix>:<argument>`` to a :class:`TextEncoder` (docs/research/method.md
Sec. 1)."""

from clipfuse.errors import ClipfuseError
from clipfuse.text.bank import BankEncoder
from clipfuse.text.base import TextEncoder
from clipfuse.text.hf_encoder import HFEncoder
from clipfuse.text.open_clip_encoder import OpenClipEncoder, parse_open_clip_argument
from clipfuse.text.random_encoder import RandomEncoder

ENCODERS: dict[str, type[TextEncoder]] = {
    "open_clip": OpenClipEncoder,
    "hf": HFEncoder,
    "bank": BankEncoder,
    "random": RandomEncoder,
}
"""Spec prefix -> encoder class (built with ``from_spec(argument)``)."""


def split_spec(spec: str) -> tuple[type[TextEncoder], str]:
    """The encoder class named by a spec's prefix, and the text after the prefix."""
    prefix, colon, argument = spec.partition(":")
    if not colon or prefix not in ENCODERS:
        known = ", ".join(f"{name}:..." for name in ENCODERS)
        raise ClipfuseError(f"text encoder {spec!r}: unknown kind (expected one of {known})")
    return ENCODERS[prefix], argument


def check_spec(spec: object) -> str:
    """``spec`` when it is ``<kind>:<argument>`` with a registered kind and an argument (well
    formed for ``random:<dim>[:<seed>]`` and ``open_clip:``), else a one-line
    :class:`ClipfuseError` ending in ``expected <what is accepted>``. Nothing is loaded."""
    kinds = ", ".join(f"{kind}:..." for kind in ENCODERS)
    expected = f"auto or <kind>:<argument> with kind one of {kinds} (e.g. random:512)"
    kind, colon, argument = spec.partition(":") if isinstance(spec, str) else ("", "", "")
    if not colon or kind not in ENCODERS or not argument:
        raise ClipfuseError(f"text encoder {spec!r}: expected {expected}")
    checks = {"random": RandomEncoder.from_spec, "open_clip": parse_open_clip_argument}
    try:
        checks.get(kind, str)(argument)
    except ClipfuseError as error:
        detail = str(error).partition(": expected ")[2] or expected
        raise ClipfuseError(f"text encoder {spec!r}: expected {detail}") from None
    return spec


def create_text_encoder(spec: str) -> TextEncoder:
    """Build the encoder of ``spec``, e.g. ``open_clip:ViT-B-16/openai``, ``hf:<dir>``,
    ``bank:text/clip-vitb16/ade20k.npy`` or ``random:512``."""
    encoder_class, argument = split_spec(spec)
    return encoder_class.from_spec(argument)
