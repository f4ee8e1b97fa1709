"""DenseCLIP's learnable context tokens (clipfuse.text.prompt_learner, docs/research/method.md Sec.
4)."""

import pytest
import torch

from clipfuse.errors import ClipfuseError
from clipfuse.text import ContextPromptEncoder, create_prompt_encoder, create_text_encoder

NAMES = ["sky", "traffic light", "person", "chest of drawers"]


@pytest.fixture(params=["open_clip", "hf"])
def spec(request: pytest.FixtureRequest) -> str:
    return request.getfixturevalue(f"{request.param}_spec")


def test_output_shape_and_only_context_is_trainable(spec: str) -> None:
    prompts = create_prompt_encoder(spec, NAMES)
    assert isinstance(prompts, ContextPromptEncoder)
    assert prompts.context.shape == (8, 32) and prompts.dim == 16
    assert [name for name, p in prompts.named_parameters() if p.requires_grad] == ["context"]
    embeddings = prompts()
    assert embeddings.shape == (4, 16)
    torch.testing.assert_close(embeddings.norm(dim=1), torch.ones(4))
    (embeddings[:, 0] * torch.arange(4.0)).sum().backward()
    assert prompts.context.grad is not None and prompts.context.grad.abs().sum() > 0
    assert all(p.grad is None for p in prompts.tower.parameters())


def test_context_changes_the_output_and_tower_stays_eval(spec: str) -> None:
    prompts = create_prompt_encoder(spec, NAMES, n_ctx=4).train()
    assert prompts.training and not prompts.tower.training
    before = prompts().detach()
    with torch.no_grad():
        prompts.context.add_(1.0)
    assert not torch.allclose(before, prompts())
    assert "context" in prompts.state_dict() and "token_ids" not in prompts.state_dict()


def test_placeholder_context_reproduces_the_frozen_encoder(spec: str) -> None:
    prompts = create_prompt_encoder(spec, NAMES, n_ctx=4)
    x_embedding = prompts._token_embedding().weight[prompts.token_ids[0, 1]]
    with torch.no_grad():
        prompts.context.copy_(x_embedding.expand(4, -1))
        learned = prompts()
    frozen = create_text_encoder(spec).encode(NAMES, "X X X X {}.")
    torch.testing.assert_close(learned, frozen, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fixed", ["bank:text/clip-vitb16/ade20k.npy", "random:16"])
def test_fixed_embeddings_have_no_learnable_context(fixed: str) -> None:
    with pytest.raises(ClipfuseError) as info:
        create_prompt_encoder(fixed, NAMES)
    kind = fixed.split(":")[0]
    assert str(info.value) == (
        "learnable context tokens need a CLIP text encoder (open_clip:... or hf:...); "
        f"{kind}:... gives fixed embeddings"
    )


def test_bad_arguments(open_clip_spec: str) -> None:
    with pytest.raises(ClipfuseError, match="n_ctx"):
        create_prompt_encoder(open_clip_spec, NAMES, n_ctx=0)
    with pytest.raises(ClipfuseError, match="duplicate"):
        create_prompt_encoder(open_clip_spec, ["sky", "Sky"])
    with pytest.raises(ClipfuseError, match="unknown kind"):
        create_prompt_encoder("clip:ViT-B-16", NAMES)
