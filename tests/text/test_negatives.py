"""``text.negatives``: names never a target, drawn into the text classifier's logits each
training step (clipfuse.text.negatives, clipfuse.engine.task)."""

import json

import numpy as np
import pytest
import torch
from helpers import tiny_config

from clipfuse.config import apply_overrides
from clipfuse.engine import train
from clipfuse.errors import ClipfuseError
from clipfuse.losses import segmentation_loss
from clipfuse.text.negatives import negative_embeddings, negative_names

# A vocabulary bank in 3-D: street is road's synonym, coach bus's (cosine > 0.9).
VOCABULARY = {
    "road": [1.0, 0.0, 0.0],
    "street": [0.95, 0.31, 0.0],
    "car": [0.0, 1.0, 0.0],
    "bus": [0.0, 0.0, 1.0],
    "coach": [0.0, 0.31, 0.95],
    "tree": [0.6, 0.6, -0.53],
    "dog": [-1.0, 0.0, 0.0],
}


@pytest.fixture
def vocabulary(tmp_path):
    path = tmp_path / "vocabulary.npy"
    np.save(path, np.array(list(VOCABULARY.values()), dtype=np.float32))
    path.with_suffix(".json").write_text(json.dumps({"classes": list(VOCABULARY)}))
    return path


def _config(folder_dataset, vocabulary, *overrides):
    config = tiny_config(folder_dataset, "convformer")
    return apply_overrides(config, [f"text.negatives={vocabulary}", *overrides])


def test_names_near_a_class_or_held_out_name_are_left_out(folder_dataset, vocabulary, capsys):
    config = _config(
        folder_dataset, vocabulary, "text.aliases={vehicle: car}", "model.text_classifier=true"
    )
    config["data"]["dataset_kwargs"] = {"unseen": ["bus"]}  # a held-out name counts too
    assert negative_names(config, ["road", "vehicle", "sky"]) == ["tree", "dog"]
    assert (
        "text.negatives: 2 of the 7 names of vocabulary.npy (the others lie within cosine 0.85 "
        "of one of the 3 class or held-out names found there; not in it: sky)"
    ) in capsys.readouterr().err
    config["text"]["negatives_max_cosine"] = 0.99  # synonyms kept, the names themselves not
    assert negative_names(config, ["road", "vehicle", "sky"]) == ["street", "coach", "tree", "dog"]


def test_negatives_need_the_text_classifier(folder_dataset, vocabulary):
    with pytest.raises(ClipfuseError, match="text.negatives is set: expected model.text_classif"):
        _config(folder_dataset, vocabulary)
    config = _config(folder_dataset, vocabulary, "model.text_classifier=true")
    embedded = negative_embeddings(config, ["sky", "road", "car"])
    assert embedded.shape == (4, 32)  # bus, coach, tree, dog: by the run's random:32


def test_a_bad_vocabulary_is_a_one_line_error_naming_the_key(folder_dataset, tmp_path):
    config = _config(folder_dataset, tmp_path / "none.npy", "model.text_classifier=true")
    with pytest.raises(ClipfuseError, match=r"^text.negatives .*none.npy: text bank .*not found"):
        negative_names(config, ["sky"])


def test_a_run_with_negatives_trains_and_draws_them_by_step(folder_dataset, vocabulary, tmp_path):
    import lightning as L

    config = _config(
        folder_dataset, vocabulary, "model.text_classifier=true", "text.negatives_per_step=2"
    )
    draws = []  # the text rows the classifier scored, training steps only

    class Draws(L.Callback):
        def on_fit_start(self, trainer, task):
            def record(module, inputs, output):
                if module.training:
                    draws.append(inputs[1].detach().clone())

            task.model.text_classifier.register_forward_hook(record)

    train(config, tmp_path / "run", callbacks=[Draws()])
    assert len(draws) == 4 and all(d.shape == (3 + 2, 32) for d in draws)
    assert all(torch.equal(d[:3], draws[0][:3]) for d in draws)  # the class vectors
    assert any(not torch.equal(d[3:], draws[0][3:]) for d in draws)  # new names each step


def test_class_weights_cover_the_classes_and_leave_negative_rows_alone():
    logits = torch.randn(2, 5, 4, 4)  # 3 classes + 2 negative names
    masks = torch.randint(0, 3, (2, 4, 4))
    weights = torch.tensor([0.5, 2.0, 1.0])
    loss = segmentation_loss({"logits": logits}, masks, class_weight=weights.tolist())["loss"]
    pixel_loss = -logits.log_softmax(1).gather(1, masks.unsqueeze(1)).squeeze(1)  # over all 5
    expected = (weights[masks] * pixel_loss).sum() / weights[masks].sum()
    torch.testing.assert_close(loss, expected)
