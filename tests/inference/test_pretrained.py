"""save_pretrained / load: the same labels as evaluation in a fresh process, and clear errors."""

import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from helpers import save_png
from huggingface_hub import ModelCard
from PIL import Image
from safetensors.torch import load_file, save_file

import clipfuse
from clipfuse import ClipfuseError
from clipfuse.cli import main
from clipfuse.config import FORMAT_VERSION
from clipfuse.inference import ClipfuseModel, read_image


def evaluation_labels(checkpoint) -> list[np.ndarray]:
    """The val label maps exactly as ``clipfuse.engine.evaluate`` computes them: its model
    (load_checkpoint + create_model_from_config), its data module, its inference settings."""
    from clipfuse.build import create_model_from_config
    from clipfuse.engine.run import _datamodule
    from clipfuse.evaluation import InferenceConfig, infer_probabilities
    from clipfuse.saved_model import load_checkpoint

    config, class_names, state = load_checkpoint(checkpoint)
    model = create_model_from_config(
        config, class_names, text_embeddings=state["head.text_embeddings"], pretrained=False
    )
    model.load_state_dict(state)
    model.eval()
    inference = InferenceConfig.from_dict(config["eval"])
    labels = []
    with torch.inference_mode():
        for batch in _datamodule(config, model.backbone.mean, model.backbone.std).val_dataloader():
            (images, masks), *others = batch.groups
            assert not others  # the tiny dataset's images are all one size
            probabilities = infer_probabilities(
                lambda x: model(x)["logits"],
                images,
                num_classes=len(class_names),
                output_size=tuple(masks.shape[-2:]),
                **inference.as_kwargs(),
            )
            labels.extend(probabilities.argmax(1).to(torch.uint8).numpy())
    return labels


def test_fresh_process_predicts_the_evaluation_labels(tiny_run, tmp_path):
    from clipfuse.engine import evaluate
    from clipfuse.evaluation import SegmentationMetrics

    # A copy whose config points at no dataset: loading needs only the folder.
    copy = tmp_path / "copy"
    shutil.copytree(tiny_run.pretrained, copy)
    edit_config(copy, lambda meta: meta["config"]["data"].update(root=str(tmp_path / "gone")))
    out = tmp_path / "labels.npy"
    script = textwrap.dedent(
        f"""
        import sys, numpy as np, clipfuse
        assert "clipfuse.engine" not in sys.modules  # import clipfuse stays light
        model = clipfuse.load({str(copy)!r}, device="cpu")
        images = {[str(p) for p in tiny_run.val_images]!r}
        results = model.predict(images, batch_size=2)
        np.save({str(out)!r}, np.stack([r.label_map for r in results]))
        clipfuse.load({str(tiny_run.checkpoint)!r}, device="cpu")  # a training checkpoint too
        loaded = [name for name in ("lightning", "clipfuse.engine") if name in sys.modules]
        assert not loaded, f"loading a model imported {{loaded}}"
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp_path, timeout=300)
    fresh = np.load(out)
    reference = evaluation_labels(tiny_run.checkpoint)
    assert fresh.shape == (len(reference), 40, 48) and fresh.dtype == np.uint8
    np.testing.assert_array_equal(fresh, np.stack(reference))

    metrics = SegmentationMetrics(3)
    for label_map, path in zip(fresh, tiny_run.val_images, strict=True):
        mask = read_image(tiny_run.data / "masks" / "val" / path.name)[..., 0]
        metrics.update(torch.tensor(label_map).long()[None], torch.tensor(mask).long()[None])
    evaluated = evaluate(tiny_run.checkpoint, quiet=True)
    assert metrics.compute()["mIoU"] == pytest.approx(evaluated["mIoU"], abs=1e-9)


def test_checkpoint_and_folder_load_the_same_model(tiny_run, tiny_model):
    from_checkpoint = clipfuse.load(tiny_run.checkpoint, device="cpu")
    image = tiny_run.val_images[0]
    a, b = from_checkpoint.predict(image), tiny_model.predict(image)
    np.testing.assert_array_equal(a.label_map, b.label_map)
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-6)
    np.testing.assert_array_equal(from_checkpoint.palette, tiny_model.palette)


def test_bf16_prediction_keeps_the_fp32_weights_and_fingerprint(tiny_run, tiny_model):
    """Prediction in bf16 holds the weights cast once (clipfuse.precision.AutocastWeights) only
    while it runs: saving and fingerprints see the trained fp32 weights."""
    from clipfuse.config import apply_overrides

    loaded = clipfuse.load(tiny_run.pretrained, device="cpu")
    config = apply_overrides(loaded.config, ["eval.precision=bf16-mixed"])
    model = ClipfuseModel(loaded.segmentor, config, loaded.class_names, loaded.palette)
    before = model.fingerprint()
    image = tiny_run.val_images[0]
    first, second = model.predict(image), model.predict(image)
    assert model.fingerprint() == before == tiny_model.fingerprint()
    assert {p.dtype for p in model.segmentor.parameters()} == {torch.float32}
    np.testing.assert_array_equal(first.scores, second.scores)
    np.testing.assert_allclose(first.scores, tiny_model.predict(image).scores, atol=0.05)


def test_pretrained_folder_contents(tiny_run):
    meta = json.loads((tiny_run.pretrained / "config.json").read_text())
    assert meta["format"] == "clipfuse-pretrained" and meta["format_version"] == FORMAT_VERSION
    assert meta["method"] == "convformer" and meta["backbone"] == "mobilenetv2_100"
    assert meta["class_names"] == ["sky", "road", "car"]
    assert meta["text"]["encoder"] == "random:32:0" and "template" in meta["text"]
    assert len(meta["normalization"]["mean"]) == 3 and len(meta["normalization"]["std"]) == 3
    assert np.asarray(meta["palette"]).shape == (3, 3)
    assert set(meta["config"]) >= {"model", "text", "data", "train", "eval"}
    weights = load_file(tiny_run.pretrained / "model.safetensors")
    assert weights["head.text_embeddings"].shape == (3, 32)
    card = ModelCard.load(tiny_run.pretrained / "README.md")  # what the Hugging Face Hub shows
    assert card.data.library_name == "clipfuse" and card.data.datasets == ["folder"]
    assert "convformer" in card.data.tags and "`sky`, `road`, `car`" in card.text


def test_prediction_result(tiny_model, tiny_run):
    from PIL import Image

    path = tiny_run.val_images[0]
    result = tiny_model.predict(path)
    assert result.label_map.shape == (40, 48) and result.label_map.dtype == np.uint8
    assert result.class_names == ["sky", "road", "car"] and result.mode == "decoder"
    assert result.scores.shape == (3, 40, 48)
    np.testing.assert_allclose(result.scores.sum(0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(result.scores.argmax(0), result.label_map)
    assert sum(result.areas.values()) == pytest.approx(1.0)
    assert isinstance(result.overlay, Image.Image)
    assert result.overlay.width > 48 and result.overlay.height >= 40  # legend on the right

    # The same image as a PIL image, an array, grey and RGBA arrays; a list is batched.
    array = read_image(path)
    as_pil = tiny_model.predict(Image.open(path))
    np.testing.assert_array_equal(as_pil.label_map, result.label_map)
    rgba = np.concatenate([array, np.full((40, 48, 1), 255, np.uint8)], axis=2)
    batch = tiny_model.predict([array, rgba, array[..., 0], str(path)], scores=False)
    assert isinstance(batch, list) and len(batch) == 4 and batch[0].scores is None
    np.testing.assert_array_equal(batch[0].label_map, result.label_map)
    np.testing.assert_array_equal(batch[1].label_map, result.label_map)
    assert batch[2].label_map.shape == (40, 48)
    # Images of different sizes in one list.
    mixed = tiny_model.predict([array, array[:32, :40]])
    assert [r.label_map.shape for r in mixed] == [(40, 48), (32, 40)]


def test_bad_inputs_give_one_line_errors(tiny_model, tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    cases = {
        "notes.png could not be read": lambda: tiny_model.predict(text),
        "missing.png not found": lambda: tiny_model.predict(tmp_path / "missing.png"),
        "dtype float32": lambda: tiny_model.predict(np.zeros((8, 8, 3), np.float32)),
        "shape (8, 8, 2)": lambda: tiny_model.predict(np.zeros((8, 8, 2), np.uint8)),
        "cannot predict on a dict": lambda: tiny_model.predict({}),
    }
    for expected, call in cases.items():
        with pytest.raises(ClipfuseError) as error:
            call()
        assert expected in str(error.value) and "\n" not in str(error.value)


def test_cuda_predicts_like_cpu_or_is_a_clear_error_without_it(tiny_run, tiny_model):
    """One test for both kinds of machine, so that no test is skipped on either."""
    if not torch.cuda.is_available():
        with pytest.raises(ClipfuseError, match="CUDA is not available"):
            clipfuse.load(tiny_run.pretrained, device="cuda")
        return
    gpu = clipfuse.load(tiny_run.pretrained, device="cuda")
    assert gpu.device.type == "cuda"
    image = tiny_run.val_images[0]
    agree = gpu.predict(image).label_map == tiny_model.predict(image).label_map
    assert agree.mean() > 0.99
    assert gpu.predict(image, ["sky", "tree"], open_vocab=True).label_map.max() <= 1


def broken_copy(tiny_run, tmp_path, name="broken"):
    target = tmp_path / name
    shutil.copytree(tiny_run.pretrained, target)
    return target


def edit_config(folder, change):
    meta = json.loads((folder / "config.json").read_text())
    change(meta)
    (folder / "config.json").write_text(json.dumps(meta))


def load_error(path) -> str:
    with pytest.raises(ClipfuseError) as error:
        clipfuse.load(path, device="cpu")
    message = str(error.value)
    assert "\n" not in message and message
    return message


def test_load_errors(tiny_run, tmp_path):
    assert "not found" in load_error(tmp_path / "nowhere")

    empty = tmp_path / "empty"
    empty.mkdir()
    assert "not a clipfuse model folder" in load_error(empty)

    newer = broken_copy(tiny_run, tmp_path, "newer")
    edit_config(newer, lambda meta: meta.update(format_version=99))
    assert "format version 99" in load_error(newer)

    foreign = broken_copy(tiny_run, tmp_path, "foreign")
    (foreign / "config.json").write_text(json.dumps({"architectures": ["BertModel"]}))
    assert "not a clipfuse model config" in load_error(foreign)

    garbled = broken_copy(tiny_run, tmp_path, "garbled")
    (garbled / "config.json").write_text("{not json")
    assert "not valid JSON" in load_error(garbled)

    no_weights = broken_copy(tiny_run, tmp_path, "no_weights")
    (no_weights / "model.safetensors").unlink()
    assert "no model.safetensors" in load_error(no_weights)

    bad_weights = broken_copy(tiny_run, tmp_path, "bad_weights")
    (bad_weights / "model.safetensors").write_bytes(b"\x00" * 100)
    assert "could not be read as safetensors" in load_error(bad_weights)

    wider = broken_copy(tiny_run, tmp_path, "wider")
    edit_config(wider, lambda meta: meta["config"]["model"]["head_kwargs"].update(dim=64))
    assert "does not fit" in load_error(wider)

    deeper = broken_copy(tiny_run, tmp_path, "deeper")
    edit_config(deeper, lambda meta: meta["config"]["model"]["head_kwargs"].update(num_blocks=2))
    assert "does not fit" in load_error(deeper)

    unknown = broken_copy(tiny_run, tmp_path, "unknown")
    edit_config(unknown, lambda meta: meta["config"]["model"].update(backbone="no_such_net"))
    assert "no_such_net" in load_error(unknown)

    random_file = tmp_path / "random.bin"
    random_file.write_bytes(np.random.default_rng(0).bytes(2048))
    assert "random.bin" in load_error(random_file)

    state_dict = tmp_path / "plain.pt"
    torch.save({"weight": torch.zeros(2)}, state_dict)
    assert "not written by clipfuse" in load_error(state_dict)


def test_save_pretrained_round_trip_and_refusals(tiny_model, tmp_path):
    again = clipfuse.load(tiny_model.save_pretrained(tmp_path / "again"), device="cpu")
    assert isinstance(again, ClipfuseModel) and again.class_names == tiny_model.class_names
    for a, b in zip(
        again.segmentor.state_dict().values(),
        tiny_model.segmentor.state_dict().values(),
        strict=True,
    ):
        assert torch.equal(a, b)
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(ClipfuseError, match="afile is a file: expected a folder"):
        tiny_model.save_pretrained(afile)
    with pytest.raises(ClipfuseError, match="afile is a file, not a folder"):
        tiny_model.save_pretrained(afile / "model")
    assert afile.read_text() == "x"


def test_models_of_older_format_versions_load_as_they_were_trained(tiny_run, tmp_path):
    """Version 1 (checkpoints without a version too) had unscaled text and no gates; version 2
    had no gates: they must load as ``text_scale="none"`` / ``gate_init=None``, not with
    today's defaults (``"rms"``, 1e-4)."""
    for path in (tiny_run.checkpoint, tiny_run.pretrained):
        head = clipfuse.load(path, device="cpu").segmentor.head
        assert head.text_scale == "rms" and head.fusion.image_gate is not None

    def as_saved_at(version, config, state):
        """What an older clipfuse saved: no key it did not know, no tensor it did not have."""
        config["model"]["head_kwargs"].pop("gate_init", None)
        if version < 2:
            config["model"]["head_kwargs"].pop("text_scale", None)
        for key in [k for k in state if k.endswith(("image_gate", "text_gate"))]:
            del state[key]

    for version in (1, 2):
        checkpoint = torch.load(tiny_run.checkpoint, map_location="cpu", weights_only=True)
        as_saved_at(version, checkpoint["clipfuse"]["config"], checkpoint["state_dict"])
        if version == 1:
            del checkpoint["clipfuse"]["format_version"]
        else:
            checkpoint["clipfuse"]["format_version"] = version
        torch.save(checkpoint, tmp_path / f"v{version}.ckpt")
        old = clipfuse.load(tmp_path / f"v{version}.ckpt", device="cpu").segmentor.head
        assert old.text_scale == ("none" if version == 1 else "rms")
        assert old.fusion.image_gate is None and old.fusion.text_gate is None

        folder = broken_copy(tiny_run, tmp_path, f"version{version}")
        state = load_file(folder / "model.safetensors")
        edit_config(
            folder,
            lambda meta, v=version, state=state: (
                meta.update(format_version=v),
                meta.pop("save_id"),  # older versions wrote no save id, in neither file
                as_saved_at(v, meta["config"], state),
            ),
        )
        save_file(state, folder / "model.safetensors")
        head = clipfuse.load(folder, device="cpu").segmentor.head
        assert head.text_scale == old.text_scale and head.fusion.image_gate is None


def test_16_bit_greyscale_is_segmented_like_its_8_bit_version(world, model, tmp_path, capsys):
    from clipfuse.inference.serve import predict_upload

    rgb = np.asarray(Image.open(sorted((world.data / "images" / "val").glob("*.png"))[0]))
    grey = np.asarray(Image.fromarray(rgb).convert("L"))
    wide = grey.astype(np.uint16) * 257  # the same intensities on 16 bits
    eight = save_png(tmp_path / "in" / "eight.png", grey)
    sixteen = save_png(tmp_path / "in" / "sixteen.png", wide)
    assert Image.open(sixteen).mode.startswith("I")

    expected = model.predict(eight, scores=False)
    assert expected.image.min() < 200  # not saturated to white
    for same in (sixteen, wide):  # the API on the file, and on the uint16 array
        result = model.predict(same, scores=False)
        assert np.array_equal(result.image, expected.image)
        assert np.array_equal(result.label_map, expected.label_map)

    out = tmp_path / "out"
    assert main(["predict", str(eight), str(sixteen), "--model", str(world.checkpoint)]
                + ["--out", str(out)]) == 0  # fmt: skip
    for kind in ("overlay", "labels"):  # the overlay shows the image: it must be the same
        pair = [np.asarray(Image.open(out / f"{n}_{kind}.png")) for n in ("eight", "sixteen")]
        assert np.array_equal(pair[0], pair[1])

    answers = [predict_upload(model, path.read_bytes()) for path in (eight, sixteen)]
    for answer in answers:
        del answer["timing"]
    assert answers[0] == answers[1]  # the web page: same label map, same areas


def test_float_images_are_refused_consistently(model, tmp_path):
    path = tmp_path / "float.tif"
    Image.fromarray(np.zeros((32, 32), np.float32)).save(path)
    with pytest.raises(ClipfuseError, match="floating-point"):
        model.predict(path)
    with pytest.raises(ClipfuseError, match="dtype float32"):
        model.predict(np.zeros((32, 32), np.float32))


def test_trained_weights_are_refused_where_only_one_set_is_saved(tiny_run, tmp_path):
    """``--trained-weights`` reads a training checkpoint's weights beside an EMA average; a
    pretrained folder or an exported file holds one set: a one-line error, no fallback."""
    from clipfuse.build import load_model
    from clipfuse.engine import evaluate

    with pytest.raises(ClipfuseError, match="holds one set of weights"):
        load_model(tiny_run.pretrained, trained=True)
    fake = tmp_path / "model.onnx"
    fake.write_bytes(b"not read")
    with pytest.raises(ClipfuseError, match="holds one set of weights"):
        evaluate(fake, trained=True)
