import pytest
import torch

from clipfuse.errors import ClipfuseError
from clipfuse.models import create_model


def test_plain_predicts_logits_at_input_size():
    model = create_model("plain", "mobilenetv2_100", num_classes=4, decoder_kwargs={"channels": 16})
    outputs = model(torch.randn(1, 3, 70, 90))
    assert set(outputs) == {"logits"}
    assert outputs["logits"].shape == (1, 4, 70, 90)


@pytest.mark.parametrize("method", ["convformer", "denseclip"])
@pytest.mark.parametrize("decoder", ["fpn", "upernet"])
def test_language_methods_return_a_score_map_with_both_decoders(method, decoder):
    text = torch.nn.functional.normalize(torch.randn(5, 32), dim=-1)
    head_kwargs = (
        {"dim": 32, "num_blocks": 1, "heads": 2}
        if method == "convformer"
        else {"context_width": 16}
    )
    model = create_model(
        method,
        "mobilenetv2_100",
        text_embeddings=text,
        decoder=decoder,
        head_kwargs=head_kwargs,
        decoder_kwargs={"channels": 16},
    )
    outputs = model(torch.randn(2, 3, 64, 64))
    assert outputs["logits"].shape == (2, 5, 64, 64)
    assert outputs["score_map"].shape == (2, 5, 2, 2)
    assert model.num_classes == 5


def test_factory_errors_are_clear():
    with pytest.raises(ClipfuseError, match="unknown method 'segformer'"):
        create_model("segformer", num_classes=3)
    with pytest.raises(ClipfuseError, match="needs text embeddings"):
        create_model("convformer", num_classes=3)
    with pytest.raises(ClipfuseError, match="num_classes=4 but 3 class embeddings"):
        create_model("convformer", num_classes=4, text_embeddings=torch.randn(3, 8))
