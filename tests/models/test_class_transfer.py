"""``train.init_from``: a trained model's weights carried to a model of other classes
(clipfuse.models.class_transfer, clipfuse.build.initialise_from)."""

import numpy as np
import pytest
import torch
from helpers import tiny_config

from clipfuse.build import class_axes, create_model_from_config, initialise_from
from clipfuse.config import apply_overrides
from clipfuse.errors import ClipfuseError
from clipfuse.models.class_transfer import transfer_state
from clipfuse.saved_model import pretrained_config, write_pretrained
from clipfuse.seeding import init_rng

SOURCE = ["sky", "road", "car"]
VARIANTS = [
    ("plain", "fpn", False),
    ("plain", "upernet", False),
    ("convformer", "fpn", False),
    ("convformer", "upernet", False),
    ("convformer", "fpn", True),
    ("denseclip", "upernet", False),
]


def _config(tmp_path, method, decoder, text_classifier, *overrides):
    config = tiny_config(tmp_path / "no-data", method)
    changes = [f"model.decoder={decoder}", f"model.text_classifier={str(text_classifier).lower()}"]
    if decoder == "upernet":
        changes.append("model.decoder_kwargs={channels: 16}")
    return apply_overrides(config, [*changes, *overrides])


def _model(config, names, seed=0):
    with init_rng(seed):
        return create_model_from_config(config, names, pretrained=False).eval()


def _save(model, config, names, folder):
    """A pretrained folder of ``model`` (a trained model as ``train.init_from`` reads it)."""
    palette = np.zeros((len(names), 3), dtype=np.uint8)
    meta = pretrained_config(config, names, (0.0,) * 3, (1.0,) * 3, palette)
    return write_pretrained(folder, model.state_dict(), meta)


def _init(config, names, source_folder, *pairs, seed=1):
    config = apply_overrides(config, [f"train.init_from={source_folder}"])
    if pairs:
        config = apply_overrides(config, [f"train.init_classes=[{', '.join(pairs)}]"])
    model = _model(config, names, seed)
    initialise_from(model, config, names)
    return model


@pytest.mark.parametrize(("method", "decoder", "text_classifier"), VARIANTS)
def test_reordered_classes_give_the_source_models_logits_reordered(
    tmp_path, capsys, method, decoder, text_classifier
):
    config = _config(tmp_path, method, decoder, text_classifier)
    source = _model(config, SOURCE)
    folder = _save(source, config, SOURCE, tmp_path / "source")
    order = [2, 0, 1]  # car, sky, road
    model = _init(config, [SOURCE[k] for k in order], folder)
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = source(images)["logits"][:, order]
        torch.testing.assert_close(model(images)["logits"], expected, atol=1e-4, rtol=1e-4)
    assert "car<-car, sky<-sky, road<-road; new classes (fresh): none" in capsys.readouterr().err


@pytest.mark.parametrize(("method", "decoder", "text_classifier"), VARIANTS)
def test_class_axes_are_the_tensors_that_follow_the_number_of_classes(
    tmp_path, method, decoder, text_classifier
):
    config = _config(tmp_path, method, decoder, text_classifier)
    model = _model(config, SOURCE)
    axes = class_axes(model, config, SOURCE)
    state = model.state_dict()
    classifier = [name for name in axes if name.endswith("classifier.weight")]
    assert len(classifier) == (0 if text_classifier else 1)
    for name in classifier:
        assert axes[name] == (0, 0)
    score_inputs = {name: axis for name, axis in axes.items() if axis[1] > 0}
    if method == "plain":
        assert set(axes) == {*classifier, *(n.replace("weight", "bias") for n in classifier)}
    else:  # every layer reading concat[I', S] takes the K score channels after the image ones
        assert axes["head.text_embeddings"] == (0, 0)
        assert score_inputs
        for name, (dim, start) in score_inputs.items():
            assert dim == 1 and start == model.head.visual_channels, name
            assert state[name].shape[1] >= start + len(SOURCE)


def test_new_classes_keep_their_fresh_initialisation_and_pairs_map_others(tmp_path, capsys):
    config = _config(tmp_path, "convformer", "fpn", False)
    source = _model(config, SOURCE)
    folder = _save(source, config, SOURCE, tmp_path / "source")
    names = ["road", "door", "vehicle"]
    fresh = _model(config, names, seed=1).state_dict()
    model = _init(config, names, folder, "car=vehicle").state_dict()
    weight, old = model["decoder.head.classifier.weight"], source.state_dict()
    torch.testing.assert_close(weight[0], old["decoder.head.classifier.weight"][1])  # road
    torch.testing.assert_close(weight[1], fresh["decoder.head.classifier.weight"][1])  # door
    torch.testing.assert_close(weight[2], old["decoder.head.classifier.weight"][2])  # car
    lateral, old_lateral = (
        model["decoder.neck.lateral.3.weight"],
        old["decoder.neck.lateral.3.weight"],
    )
    image_channels = lateral.shape[1] - len(names)
    torch.testing.assert_close(lateral[:, :image_channels], old_lateral[:, :image_channels])
    torch.testing.assert_close(
        lateral[:, image_channels + 1],
        fresh["decoder.neck.lateral.3.weight"][:, image_channels + 1],
    )
    torch.testing.assert_close(lateral[:, image_channels + 2], old_lateral[:, image_channels + 2])
    # the text embeddings are the new names', not the source's
    torch.testing.assert_close(model["head.text_embeddings"], fresh["head.text_embeddings"])
    by_class = {"head.text_embeddings", "decoder.neck.lateral.3.weight"}
    by_class |= {f"decoder.head.classifier.{kind}" for kind in ("weight", "bias")}
    for name, tensor in old.items():  # everything else is the source's
        if name not in by_class:
            torch.testing.assert_close(model[name], tensor, msg=name)
    assert "road<-road, vehicle<-car; new classes (fresh): door" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("source_method", "pairs", "fragment"),
    [
        ("plain", (), "lacks head."),
        ("convformer", ("bus=road",), "train.init_classes: source class 'bus' is unknown"),
        ("convformer", ("car=road", "car=sky"), "source class 'car' is mapped twice"),
        ("convformer", ("car=road", "sky=road"), "class 'road' is paired twice"),
    ],
)
def test_a_source_that_does_not_fit_is_a_one_line_error(tmp_path, source_method, pairs, fragment):
    source_config = _config(tmp_path, source_method, "fpn", False)
    folder = _save(_model(source_config, SOURCE), source_config, SOURCE, tmp_path / "source")
    config = _config(tmp_path, "convformer", "fpn", False)
    with pytest.raises(ClipfuseError, match="train.init_") as error:
        _init(config, SOURCE, folder, *pairs)
    assert fragment in str(error.value) and "\n" not in str(error.value)


def test_a_missing_source_is_a_one_line_error(tmp_path):
    config = _config(tmp_path, "plain", "fpn", False)
    with pytest.raises(ClipfuseError, match=r"train.init_from .*nowhere: model .* not found"):
        _init(config, SOURCE, tmp_path / "nowhere")


def test_transfer_refuses_a_tensor_of_another_shape():
    fresh = {"a": torch.zeros(2, 3), "classes": torch.zeros(4, 5)}
    source = {"a": torch.zeros(2, 4), "classes": torch.ones(3, 5)}
    with pytest.raises(
        ClipfuseError, match=r"here: tensor a has shape \(2, 4\), expected \(2, 3\)"
    ):
        transfer_state(fresh, source, {"classes": (0, 0)}, [0, None, 2, 1], "here")
    source["a"] = torch.ones(2, 3)
    source["classes"] = torch.arange(15.0).reshape(3, 5)
    state = transfer_state(fresh, source, {"classes": (0, 0)}, [2, None, 0, 1], "here")
    assert state["a"].eq(1).all()
    assert state["classes"][:, 0].tolist() == [10.0, 0.0, 0.0, 5.0]


@pytest.mark.parametrize(
    ("method", "decoder"), [("convformer", "upernet"), ("denseclip", "upernet"), ("plain", "fpn")]
)
def test_other_class_counts_move_each_class_slice_and_keep_the_rest(tmp_path, method, decoder):
    """11 -> 8 as CamVid -> LabelMeFacade, here 4 -> 3: UperNet's bottleneck reads
    concat[c5 (C + K), PPM outputs], so the K classes sit between two copied blocks."""
    config = _config(tmp_path, method, decoder, False)
    source_names = ["sky", "road", "car", "tree"]
    source = _model(config, source_names)
    folder = _save(source, config, source_names, tmp_path / "source")
    names = ["road", "door", "vegetation"]
    fresh_model = _model(config, names, seed=1)
    axes = class_axes(fresh_model, config, names)
    fresh, old = fresh_model.state_dict(), source.state_dict()
    model = _init(config, names, folder, "tree=vegetation").state_dict()
    start_of = {0: 1, 1: None, 2: 3}  # road <- road, door new, vegetation <- tree
    checked = 0
    for name, (dim, start) in axes.items():
        if name == "head.text_embeddings":
            torch.testing.assert_close(model[name], fresh[name])  # the new names' vectors
            continue
        new, before = model[name].movedim(dim, 0), old[name].movedim(dim, 0)
        torch.testing.assert_close(new[:start], before[:start])
        torch.testing.assert_close(new[start + 3 :], before[start + 4 :])
        for k, j in start_of.items():
            expected = fresh[name].movedim(dim, 0)[start + k] if j is None else before[start + j]
            torch.testing.assert_close(new[start + k], expected)
        checked += 1
    assert checked >= (2 if method == "plain" else 7)  # UperNet: PPM x 4, bottleneck, classifier


def test_init_text_source_keeps_the_source_vectors_of_started_classes(tmp_path):
    config = _config(tmp_path, "convformer", "fpn", False)
    source = _model(config, SOURCE)
    folder = _save(source, config, SOURCE, tmp_path / "source")
    names = ["road", "door", "vehicle"]
    fresh = _model(config, names, seed=1).state_dict()["head.text_embeddings"]
    config = apply_overrides(config, ["train.init_text=source"])
    text = _init(config, names, folder, "car=vehicle").state_dict()["head.text_embeddings"]
    old = source.state_dict()["head.text_embeddings"]
    torch.testing.assert_close(text[0], old[1])  # road: the same name, the same vector
    torch.testing.assert_close(text[1], fresh[1])  # door: its own
    torch.testing.assert_close(text[2], old[2])  # vehicle: car's, not its own
    assert not torch.equal(fresh[2], old[2])
