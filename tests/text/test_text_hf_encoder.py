"""``hf:<local dir>`` with a tiny CLIPTextModelWithProjection (clipfuse.text.hf_encoder)."""

import open_clip
import pytest
import torch
import torch.nn.functional as F

from clipfuse.errors import ClipfuseError
from clipfuse.text import HFEncoder, create_text_encoder

NAMES = ["sky", "chest of drawers", "person"]


def test_tokenizer_built_from_open_clip_vocab_matches_open_clip(hf_spec: str) -> None:
    tokenizer = create_text_encoder(hf_spec).tokenizer
    reference = open_clip.SimpleTokenizer()
    for text in ["a photo of a traffic light.", "X X X X chest of drawers.", "SignSymbol"]:
        ids = reference([text])[0]
        assert tokenizer(text)["input_ids"] == ids[ids != 0].tolist()


def test_shape_norm_frozen_and_matches_text_embeds(hf_spec: str) -> None:
    encoder = create_text_encoder(hf_spec)
    assert isinstance(encoder, HFEncoder) and encoder.dim == 16
    embeddings = encoder.encode(NAMES)
    assert embeddings.shape == (3, 16) and not embeddings.requires_grad
    assert not any(p.requires_grad for p in encoder.model.parameters())
    with torch.no_grad():
        for row, name in enumerate(NAMES):
            batch = encoder.tokenizer([f"a photo of a {name}."], return_tensors="pt")
            expected = F.normalize(encoder.model(**batch).text_embeds, dim=-1)[0]
            torch.testing.assert_close(embeddings[row], expected, rtol=1e-5, atol=1e-5)


def test_deterministic_across_loads_and_templates(hf_spec: str) -> None:
    first = create_text_encoder(hf_spec).encode(NAMES)
    second = create_text_encoder(hf_spec).encode(NAMES)
    torch.testing.assert_close(first, second, rtol=0, atol=1e-6)
    assert not torch.allclose(first, create_text_encoder(hf_spec).encode(NAMES, "a {} in a scene"))


@pytest.mark.parametrize(
    "spec", ["hf:", "hf:/nonexistent/clip/text/model", "hf:not/a/valid/repo/id"]
)
def test_bad_sources_are_one_line_errors(spec: str) -> None:
    with pytest.raises(ClipfuseError) as info:
        create_text_encoder(spec)
    assert "\n" not in str(info.value)
