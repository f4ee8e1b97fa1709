"""``random:<dim>[:<seed>]``, the no-language ablation (clipfuse.text.random_encoder)."""

import pytest
import torch

from clipfuse.errors import ClipfuseError
from clipfuse.text import RandomEncoder, create_text_encoder


def test_unit_vectors_of_requested_dim() -> None:
    embeddings = create_text_encoder("random:24").encode(["sky", "road", "car"])
    assert embeddings.shape == (3, 24) and embeddings.dtype == torch.float32
    torch.testing.assert_close(embeddings.norm(dim=1), torch.ones(3))
    assert not embeddings.requires_grad


def test_same_name_same_vector_in_any_order_or_list() -> None:
    encoder = RandomEncoder(32, seed=5)
    first = encoder.encode(["sky", "road", "car"])
    second = RandomEncoder(32, seed=5).encode(["car", "person", "Sky"])
    assert torch.equal(first[0], second[2])
    assert torch.equal(first[2], second[0])
    assert not torch.allclose(first[0], first[1])


def test_seed_changes_vectors_and_template_is_ignored() -> None:
    default = create_text_encoder("random:16").encode(["sky"])
    assert torch.equal(default, create_text_encoder("random:16:0").encode(["sky"], "a {} b"))
    assert not torch.allclose(default, create_text_encoder("random:16:1").encode(["sky"]))


@pytest.mark.parametrize(
    "spec", ["random:", "random:abc", "random:0", "random:8:1:2", "random:8:x"]
)
def test_bad_specs(spec: str) -> None:
    with pytest.raises(ClipfuseError, match="random:"):
        create_text_encoder(spec)


def test_vectors_are_real_cpu_data_inside_a_meta_device_block() -> None:
    """Models are built on the meta device to count costs; T0 must still be computed."""
    expected = RandomEncoder(8).encode(["sky", "road"])
    with torch.device("meta"):
        inside = RandomEncoder(8).encode(["sky", "road"])
    assert inside.device.type == "cpu" and torch.equal(inside, expected)
