"""Tiny, randomly initialised CLIP text towers saved locally; nothing is downloaded.

The Hugging Face tokenizer is built from the CLIP BPE vocabulary that open_clip ships
(``bpe_simple_vocab_16e6.txt.gz``), so both backends tokenise exactly like real CLIP.
"""

import gzip
import os
from pathlib import Path

import pytest
import torch
from helpers import TINY_EMBED_DIM, TINY_WIDTH

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No Hub access even if huggingface_hub was imported before this file set the variable;
    the default cache goes to a temporary folder."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("CLIPFUSE_CACHE", str(tmp_path / "clipfuse-cache"))


def clip_bpe_tokenizer():
    """A Hugging Face ``CLIPTokenizer`` with the real CLIP vocabulary and merges from open_clip."""
    import open_clip
    from open_clip.tokenizer import default_bpe
    from transformers import CLIPTokenizer

    lines = gzip.open(default_bpe()).read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    specials = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
    vocab = {specials.get(k, k): v for k, v in open_clip.SimpleTokenizer().encoder.items()}
    return CLIPTokenizer(vocab=vocab, merges=[tuple(line.split()) for line in lines])


@pytest.fixture(scope="session")
def hf_spec(tmp_path_factory: pytest.TempPathFactory) -> str:
    """``hf:<local folder>`` holding a tiny CLIPTextModelWithProjection and its tokenizer."""
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    folder = tmp_path_factory.mktemp("hf_clip")
    config = CLIPTextConfig(
        hidden_size=TINY_WIDTH,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=2,
        projection_dim=TINY_EMBED_DIM,
        vocab_size=49408,
        max_position_embeddings=77,
    )
    torch.manual_seed(0)
    CLIPTextModelWithProjection(config).save_pretrained(folder)
    clip_bpe_tokenizer().save_pretrained(folder)
    return f"hf:{folder}"
