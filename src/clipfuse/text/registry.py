"""Text-encoder specs: ``<prefix>:<argument>`` to a :class:`TextEncoder` (method.md section 1)."""

from clipfuse.errors import ClipfuseError
from clipfuse.text.bank import BankEncoder
from clipfuse.text.base import TextEncoder
from clipfuse.text.hf_encoder import HFEncoder
from clipfuse.text.open_clip_encoder import OpenClipEncoder
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


def create_text_encoder(spec: str) -> TextEncoder:
    """Build the encoder of ``spec``, e.g. ``open_clip:ViT-B-16/openai``, ``hf:<dir>``,
    ``bank:text/clip-vitb16/ade20k.npy`` or ``random:512``."""
    encoder_class, argument = split_spec(spec)
    return encoder_class.from_spec(argument)
