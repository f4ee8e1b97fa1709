import pytest
import torch

from clipfuse.errors import ClipfuseError
from clipfuse.models import create_model


def test_plain_predicts_logits_at_input_size():
    model = create_model("plain", "mobilenetv2_100", num_classes=4, decoder_kwargs={"channels": 16})
    outputs = model(torch.randn(1, 3, 70, 90))
    assert set(outputs) == {"logits"}
    assert outputs["logits"].shape == (1, 4, 70, 90)


def test_factory_errors_are_clear():
    with pytest.raises(ClipfuseError, match="unknown method 'segformer'"):
        create_model("segformer", num_classes=3)
    with pytest.raises(ClipfuseError, match="needs text embeddings"):
        create_model("convformer", num_classes=3)
    with pytest.raises(ClipfuseError, match="num_classes=4 but 3 class embeddings"):
        create_model("convformer", num_classes=4, text_embeddings=torch.randn(3, 8))
