"""``model.text_classifier``: the decoder's pixel embeddings against the class text vectors."""

import math

import pytest
import torch
import torch.nn.functional as F
from helpers import tiny_config

from clipfuse import ClipfuseError
from clipfuse.build import create_model_from_config
from clipfuse.config import apply_overrides
from clipfuse.models import create_model

NAMES = ["sky", "road", "car"]


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    from helpers import write_folder_dataset

    data = write_folder_dataset(tmp_path_factory.mktemp("tc") / "data")
    return apply_overrides(tiny_config(data, "convformer"), ["model.text_classifier=true"])


@pytest.fixture(scope="module")
def segmentor(config):
    torch.manual_seed(0)
    return create_model_from_config(config, NAMES, pretrained=False).eval()


def test_logits_are_scaled_cosines_of_decoder_embeddings(segmentor):
    images = torch.randn(2, 3, 64, 64)
    text = segmentor.head.text_embeddings
    assert segmentor.decoder.head.classifier.out_channels == text.shape[1] == 32
    with torch.no_grad():
        logits = segmentor(images)["logits"]
        features = segmentor.backbone(images)
        features[-1], _ = segmentor.head(features[-1])
        pixels = segmentor.decoder(features)
    assert logits.shape == (2, 3, 64, 64)
    expected = torch.einsum(
        "bchw,kc->bkhw", F.normalize(pixels, dim=1), F.normalize(text, dim=1)
    ) * (1 / 0.07)
    expected = F.interpolate(expected, size=(64, 64), mode="bilinear", align_corners=False)
    assert torch.allclose(logits, expected, atol=1e-4)
    assert segmentor.text_classifier.logit_scale.item() == pytest.approx(math.log(1 / 0.07))


def test_other_class_vectors_give_their_logits(segmentor):
    images = torch.randn(1, 3, 64, 64)
    text = segmentor.head.text_embeddings
    with torch.no_grad():
        trained = segmentor(images)["logits"]
        permuted = segmentor(images, text[[2, 0, 1]])["logits"]
        five = segmentor(images, torch.randn(5, text.shape[1]))["logits"]
        scaled = segmentor(images, 3.0 * text)["logits"]
    assert torch.allclose(permuted, trained[:, [2, 0, 1]], atol=1e-5)
    assert torch.allclose(scaled, trained, atol=1e-5)  # cosine: the vectors' norm is ignored
    assert five.shape == (1, 5, 64, 64)
    assert segmentor.head.text_embeddings.shape[0] == 3  # the head's vocabulary is untouched


def test_plain_has_no_text_to_classify_with():
    with pytest.raises(ClipfuseError, match="text_classifier needs a language-guided method"):
        create_model("plain", num_classes=3, text_classifier=True, backbone_kwargs={})


def test_round_trip_and_open_vocab_through_the_decoder(config, segmentor, tmp_path):
    import clipfuse
    from clipfuse.inference import ClipfuseModel

    folder = ClipfuseModel(segmentor, config, NAMES).save_pretrained(tmp_path / "model")
    loaded = clipfuse.load(folder, device="cpu")
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded.segmentor(images)["logits"], segmentor(images)["logits"])
    assert loaded.open_vocab_path == "text_classifier"
    image = (torch.rand(40, 48, 3) * 255).to(torch.uint8).numpy()
    decoder = loaded.predict(image, scores=False)
    vocab = loaded.predict(image, open_vocab=True)
    assert vocab.mode == "text_classifier"
    assert (vocab.label_map == decoder.label_map).all()  # trained names: the same logits
    renamed = loaded.predict(image, "car, road, sky, bus", open_vocab=True, scores=False)
    assert renamed.class_names == ["car", "road", "sky", "bus"]
    assert renamed.label_map.max() <= 3
