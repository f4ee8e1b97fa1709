"""Text encoders for the class names (docs/research/method.md Sec. 1 and 4).

Specs: ``open_clip:<arch>/<pretrained>``, ``hf:<model-id-or-dir>``, ``bank:<npy-or-folder>``,
``random:<dim>[:<seed>]``; ``text.shuffle`` (:func:`derangement`). :func:`embed_class_names` computes T0 once and caches it on disk;
:func:`create_prompt_encoder` gives DenseCLIP's learnable-context prompts.
"""

from clipfuse.text.aliases import CAMVID_ALIASES, apply_aliases
from clipfuse.text.bank import BankEncoder
from clipfuse.text.base import TextEncoder, normalize_name, validate_class_names
from clipfuse.text.cache import cache_key, embed_class_names
from clipfuse.text.hf_encoder import HFEncoder
from clipfuse.text.open_clip_encoder import OpenClipEncoder
from clipfuse.text.prompt_learner import ContextPromptEncoder, create_prompt_encoder
from clipfuse.text.prompts import DEFAULT_TEMPLATE
from clipfuse.text.random_encoder import RandomEncoder
from clipfuse.text.registry import ENCODERS, create_text_encoder
from clipfuse.text.shuffle import derangement

__all__ = [
    "CAMVID_ALIASES",
    "DEFAULT_TEMPLATE",
    "ENCODERS",
    "BankEncoder",
    "ContextPromptEncoder",
    "HFEncoder",
    "OpenClipEncoder",
    "RandomEncoder",
    "TextEncoder",
    "apply_aliases",
    "create_prompt_encoder",
    "create_text_encoder",
    "cache_key",
    "derangement",
    "embed_class_names",
    "normalize_name",
    "validate_class_names",
]
