"""Labels at inference: subsets and renamings of the trained vocabulary, open vocabulary."""

import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import refused, tiny_config

import clipfuse
from clipfuse import ClipfuseError
from clipfuse.inference import ClipfuseModel, parse_labels, read_image, resolve_labels

CAMVID = ["Sky", "Road", "Pavement", "Car", "Pedestrian"]
CAMVID_ALIASES = {"Pavement": "sidewalk", "Pedestrian": "person"}


def test_parse_labels_forms():
    assert parse_labels(None) is None
    assert parse_labels(" road, car ,person ") == [
        ("road", "road"),
        ("car", "car"),
        ("person", "person"),
    ]
    assert parse_labels(["Road=street", "car"]) == [("Road", "street"), ("car", "car")]
    assert parse_labels({"Road": "street"}) == [("Road", "street")]
    for bad, message in [
        ("", "none given"),
        (["road", "Road"], "twice"),
        (["=x"], "empty"),
        (["road="], "empty"),
        ([3], "expected names"),
    ]:
        with pytest.raises(ClipfuseError, match=message):
            parse_labels(bad)


def test_resolve_labels_matches_names_and_aliases():
    choice = resolve_labels("road, PERSON, SideWalk=walkway", CAMVID, CAMVID_ALIASES)
    assert choice.names == ("road", "PERSON", "walkway")
    assert choice.indices == (1, 4, 2)
    everything = resolve_labels(None, CAMVID, CAMVID_ALIASES)
    assert everything.names == tuple(CAMVID) and everything.indices == (0, 1, 2, 3, 4)
    with pytest.raises(ClipfuseError) as error:
        resolve_labels("road, tree, lake", CAMVID, CAMVID_ALIASES)
    message = str(error.value)
    assert "'tree', 'lake'" in message and "Sky, Road, Pavement" in message
    with pytest.raises(ClipfuseError, match="Pedestrian requested twice"):
        resolve_labels("person, pedestrian=walker", CAMVID, CAMVID_ALIASES)
    opened = resolve_labels("road, lake", CAMVID, CAMVID_ALIASES, open_vocab=True)
    assert opened.indices == (1, None) and opened.new_queries == ["lake"]


def test_subset_is_the_argmax_over_the_chosen_logits(tiny_model, tiny_run):
    image = tiny_run.val_images[1]
    full = tiny_model.predict(image)
    subset = tiny_model.predict(image, labels=["car", "Sky"])
    assert subset.class_names == ["car", "Sky"] and subset.scores.shape == (2, 40, 48)
    # Where the full prediction is one of the chosen classes, the subset agrees with it.
    names = np.array(full.class_names)[full.label_map]
    chosen = np.isin(names, ["car", "sky"])
    expected = np.where(names == "car", 0, 1)
    np.testing.assert_array_equal(subset.label_map[chosen], expected[chosen])
    assert set(np.unique(subset.label_map)) <= {0, 1}
    # Colours follow the trained classes.
    np.testing.assert_array_equal(subset.palette, tiny_model.palette[[2, 0]])


def test_renaming_keeps_the_prediction(tiny_model, tiny_run):
    image = tiny_run.val_images[0]
    full = tiny_model.predict(image)
    renamed = tiny_model.predict(image, {"sky": "heavens", "road": "street", "car": "vehicle"})
    assert renamed.class_names == ["heavens", "street", "vehicle"]
    np.testing.assert_array_equal(renamed.label_map, full.label_map)
    as_strings = tiny_model.predict(image, "sky=heavens, road=street, car=vehicle")
    np.testing.assert_array_equal(as_strings.label_map, full.label_map)


def test_unknown_labels_without_open_vocab(tiny_model, tiny_run):
    with pytest.raises(ClipfuseError) as error:
        tiny_model.predict(tiny_run.val_images[0], labels="road, unicorn")
    message = str(error.value)
    assert "'unicorn'" in message and "sky, road, car" in message and "--open-vocab" in message
    assert "\n" not in message


def test_open_vocab_with_the_trained_labels_is_the_score_map(tiny_model, tiny_run):
    image = read_image(tiny_run.val_images[2])
    result = tiny_model.predict(image, open_vocab=True)
    assert result.mode == "score_map" and result.class_names == ["sky", "road", "car"]
    tensor = tiny_model._runner.transform.image(image)[None]
    with torch.inference_mode():
        score_map = tiny_model.segmentor(tensor)["score_map"]
    expected = F.interpolate(score_map, size=(40, 48), mode="bilinear", align_corners=False)
    agree = result.label_map == expected.argmax(1)[0].numpy()
    assert agree.mean() > 0.99  # two bilinear steps vs one: ties at the edges may differ
    np.testing.assert_allclose(result.scores.sum(0), 1.0, atol=1e-5)


def test_open_vocab_new_labels_then_the_decoder_is_unchanged(tiny_model, tiny_run):
    image = tiny_run.val_images[0]
    before = tiny_model.predict(image)
    embeddings = tiny_model.segmentor.head.text_embeddings.clone()
    result = tiny_model.predict(image, ["sky", "tree", "lake=water"], open_vocab=True)
    assert result.class_names == ["sky", "tree", "water"] and result.scores.shape == (3, 40, 48)
    assert result.label_map.max() <= 2
    assert not np.array_equal(result.palette[1], result.palette[2])
    np.testing.assert_array_equal(result.palette[0], tiny_model.palette[0])
    assert torch.equal(tiny_model.segmentor.head.text_embeddings, embeddings)
    after = tiny_model.predict(image)
    np.testing.assert_array_equal(after.label_map, before.label_map)
    np.testing.assert_array_equal(after.scores, before.scores)
    single = tiny_model.predict(image, "tree", open_vocab=True)
    assert single.class_names == ["tree"] and not single.label_map.any()


def banked_model(tiny_run, folder, names: list[str], width: int = 32) -> ClipfuseModel:
    """The tiny model with the text encoder ``bank:`` of random vectors (of ``width``) for
    ``names``, whose width only the model knows (not its spec)."""
    bank = folder / "bank"
    bank.mkdir()
    vectors = np.random.default_rng(1).normal(size=(len(names), width)).astype(np.float32)
    np.save(bank / "mini.npy", vectors)
    (bank / "mini.json").write_text(json.dumps({"classes": names}))
    shutil.copytree(tiny_run.pretrained, folder / "banked")
    meta = json.loads((folder / "banked" / "config.json").read_text())
    meta["config"]["text"]["encoder"] = f"bank:{bank / 'mini.npy'}"
    (folder / "banked" / "config.json").write_text(json.dumps(meta))
    return clipfuse.load(folder / "banked", device="cpu")


def test_open_vocab_with_a_bank_that_lacks_labels(tiny_run, tmp_path):
    model = banked_model(tiny_run, tmp_path, ["sky", "road", "car", "tree"])
    image = tiny_run.val_images[0]
    assert model.predict(image, "road, tree", open_vocab=True).class_names == ["road", "tree"]
    with pytest.raises(ClipfuseError) as error:
        model.predict(image, "road, unicorn, dragon", open_vocab=True)
    message = str(error.value)
    assert "'unicorn', 'dragon'" in message and "mini.npy" in message and "\n" not in message


def test_open_vocab_recomputes_a_cached_matrix_of_another_width(
    tiny_run, tmp_path, monkeypatch, capsys
):
    from safetensors.torch import save_file

    monkeypatch.setenv("CLIPFUSE_CACHE", str(tmp_path / "cache"))
    model = banked_model(tiny_run, tmp_path, ["sky", "road", "car", "tree", "lake"])
    image = tiny_run.val_images[0]
    expected = model.predict(image, "road, tree, lake", open_vocab=True)
    (entry,) = (tmp_path / "cache" / "text").iterdir()  # tree and lake
    save_file({"embeddings": torch.ones(2, 7)}, entry)  # the right rows, another width
    capsys.readouterr()
    again = model.predict(image, "road, tree, lake", open_vocab=True)  # was: a stack traceback
    np.testing.assert_array_equal(again.scores, expected.scores)
    (note,) = capsys.readouterr().err.splitlines()
    assert note == (
        f"note: text-embedding cache {entry} holds a 2x7 matrix, expected 2 rows (one per class) "
        "of width 32: computing the embeddings again"
    )


def test_open_vocab_with_an_encoder_of_another_width_is_one_line(tiny_run, tmp_path):
    model = banked_model(tiny_run, tmp_path, ["sky", "road", "car", "tree"], width=16)
    with pytest.raises(ClipfuseError) as error:  # was: a stack traceback beside trained rows
        model.predict(tiny_run.val_images[0], "road, tree", open_vocab=True)
    message = str(error.value)
    assert message.startswith("open vocabulary: cannot embed 'tree' with the model's text encoder")
    assert "holds a 1x16 matrix, expected 1 row (one per class) of width 32" in message, message


def test_open_vocab_needs_a_language_guided_model(folder_dataset):

    from clipfuse.build import create_model_from_config

    config = tiny_config(folder_dataset, "plain")
    model = ClipfuseModel(
        create_model_from_config(config, ["sky", "road", "car"], pretrained=False),
        config,
        ["sky", "road", "car"],
    )
    assert not model.supports_open_vocab
    with pytest.raises(ClipfuseError, match="'plain', which has no text"):
        model.predict(np.zeros((32, 32, 3), np.uint8), ["lake"], open_vocab=True)
    with pytest.raises(ClipfuseError) as error:
        model.predict(np.zeros((32, 32, 3), np.uint8), ["lake"])
    assert "'lake'" in str(error.value) and "open-vocab" not in str(error.value)
    assert model.predict(np.zeros((32, 32, 3), np.uint8), ["road"]).class_names == ["road"]


def test_empty_labels_on_the_command_line_do_not_speak_python(world, tmp_path, capsys):
    image = str(sorted((world.data / "images" / "val").glob("*.png"))[0])
    err = refused(
        capsys,
        ["predict", image, "--model", str(world.checkpoint), "--labels", ",", "--out",
         str(tmp_path / "p")],
        "labels: none given",
    )  # fmt: skip
    assert "None" not in err
