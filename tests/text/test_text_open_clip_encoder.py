"""``open_clip:<arch>/<pretrained>`` with a tiny local checkpoint (clipfuse.text.open_clip_encoder)."""

from pathlib import Path

import open_clip
import pytest
import torch
import torch.nn.functional as F

from clipfuse.errors import ClipfuseError
from clipfuse.text import OpenClipEncoder, create_text_encoder

NAMES = ["sky", "traffic light", "person"]


def test_shape_norm_and_frozen_eval_text_tower(open_clip_spec: str) -> None:
    encoder = create_text_encoder(open_clip_spec)
    assert isinstance(encoder, OpenClipEncoder) and encoder.dim == 16
    embeddings = encoder.encode(NAMES)
    assert embeddings.shape == (3, 16) and embeddings.dtype == torch.float32
    assert not embeddings.requires_grad
    torch.testing.assert_close(embeddings.norm(dim=1), torch.ones(3))
    assert encoder.model.visual is None and not encoder.model.training
    assert not any(p.requires_grad for p in encoder.model.parameters())


def test_matches_encode_text_of_the_filled_template(open_clip_spec: str) -> None:
    encoder = create_text_encoder(open_clip_spec)
    tokens = open_clip.get_tokenizer(open_clip_spec.split(":")[1].split("/")[0])
    with torch.no_grad():
        expected = encoder.model.encode_text(tokens([f"a photo of a {n}." for n in NAMES]))
    torch.testing.assert_close(encoder.encode(NAMES), F.normalize(expected, dim=-1))


def test_deterministic_and_name_normalised(open_clip_spec: str) -> None:
    first = create_text_encoder(open_clip_spec).encode(NAMES)
    second = create_text_encoder(open_clip_spec).encode(["Sky", "traffic_light", "person "])
    torch.testing.assert_close(first, second, rtol=0, atol=1e-6)


def test_template_matters_and_templates_are_averaged(open_clip_spec: str) -> None:
    encoder = create_text_encoder(open_clip_spec)
    photo = encoder.encode(NAMES, "a photo of a {}.")
    sketch = encoder.encode(NAMES, "a sketch of the {}.")
    assert not torch.allclose(photo, sketch)
    averaged = encoder.encode(NAMES, ["a photo of a {}.", "a sketch of the {}."])
    torch.testing.assert_close(averaged, F.normalize(photo + sketch, dim=-1))


def test_source_files_is_the_local_checkpoint(open_clip_spec: str) -> None:
    checkpoint = Path(open_clip_spec.split("/", 1)[1])
    assert OpenClipEncoder.source_files(open_clip_spec.split(":", 1)[1]) == [checkpoint]
    assert OpenClipEncoder.source_files("ViT-B-16/openai") == []


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("open_clip:ViT-B-16", "expected open_clip:<arch>/<pretrained>"),
        ("open_clip:No-Such-Arch/openai", "unknown architecture 'No-Such-Arch'"),
        ("open_clip:ViT-B-16//nonexistent/weights.pt", "could not load weights"),
    ],
)
def test_bad_specs_are_one_line_errors(spec: str, fragment: str) -> None:
    with pytest.raises(ClipfuseError) as info:
        create_text_encoder(spec)
    assert fragment in str(info.value) and "\n" not in str(info.value)
