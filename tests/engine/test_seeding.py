"""The seeding of a run (clipfuse.seeding): the training data stream depends on the seed alone,
so runs of different methods at one seed are strictly paired, whatever else changes."""

import json
import warnings

import pytest
import torch
import yaml
from helpers import tiny_config, write_folder_dataset
from test_train import CrashAt

from clipfuse.build import create_model_from_config
from clipfuse.config import upgrade_config
from clipfuse.engine import train
from clipfuse.engine.batch_stream import STREAM_FILE, chain
from clipfuse.seeding import SEEDING_VERSION, init_rng, with_resolved_draws
from clipfuse.text import derangement, embed_class_names


@pytest.fixture
def six_images(tmp_path):
    """6 training images at batch 2: 3 steps an epoch, so 7 steps cross two epochs."""
    return write_folder_dataset(tmp_path / "six", per_split=6)


def stream_of(data, out, method="plain", seed=0, **train_keys):
    config = tiny_config(data, method, **{"max_steps": 7, "val_every": 7, **train_keys})
    config["seed"] = seed
    train(config, out)
    return json.loads((out / STREAM_FILE).read_text())


def test_two_methods_at_one_seed_train_on_the_same_batches(six_images, tmp_path):
    plain = stream_of(six_images, tmp_path / "plain")
    convformer = stream_of(six_images, tmp_path / "convformer", "convformer")
    assert plain["seeding"] == SEEDING_VERSION and plain["steps"] == 7
    assert len(set(plain["per_step"])) == 7  # the hashes do tell batches apart
    assert convformer["per_step"] == plain["per_step"]
    assert convformer["stream"] == plain["stream"] == chain(plain["per_step"])
    other_seed = stream_of(six_images, tmp_path / "seed1", seed=1)
    assert other_seed["stream"] != plain["stream"]


def test_validation_schedule_and_workers_leave_the_batches_unchanged(six_images, tmp_path):
    reference = stream_of(six_images, tmp_path / "reference")
    often = stream_of(six_images, tmp_path / "often", val_every=2)
    workers = tiny_config(six_images, max_steps=7, val_every=7)
    workers["data"]["num_workers"] = 2
    train(workers, tmp_path / "workers")
    in_workers = json.loads((tmp_path / "workers" / STREAM_FILE).read_text())
    assert often["per_step"] == reference["per_step"]
    assert in_workers["per_step"] == reference["per_step"]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_resumed_run_continues_the_same_stream(six_images, tmp_path, num_workers):
    """With workers too: their loader draws indices as soon as Lightning builds it, before it
    sets the epoch or runs a callback (a CCP run resumed with 2 workers trained the first
    batches of epoch 0 again)."""
    reference = stream_of(six_images, tmp_path / "reference")
    out = tmp_path / "crashed"
    config = tiny_config(six_images, max_steps=7, val_every=7)
    config["data"]["num_workers"] = num_workers
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(config, out, callbacks=[CrashAt(5)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(None, out, resume=True)  # from the step-4 checkpoint, in the middle of epoch 1
    # Lightning's "your dataloader is not resumable ... unreliable results" would be wrong here
    assert not [w for w in caught if "not resumable" in str(w.message)]
    resumed = json.loads((out / STREAM_FILE).read_text())
    assert resumed["per_step"] == reference["per_step"]
    assert resumed["stream"] == reference["stream"]


def test_model_init_has_its_own_generator(folder_dataset):
    config = tiny_config(folder_dataset, "convformer")
    torch.manual_seed(123)
    before = torch.get_rng_state()
    with init_rng(0):
        first = create_model_from_config(config, ["sky", "road", "car"], pretrained=False)
    assert torch.equal(torch.get_rng_state(), before)  # the global stream is untouched
    with init_rng(0):
        again = create_model_from_config(config, ["sky", "road", "car"], pretrained=False)
    with init_rng(1):
        other = create_model_from_config(config, ["sky", "road", "car"], pretrained=False)
    weights = [next(m.head.parameters()) for m in (first, again, other)]
    assert torch.equal(weights[0], weights[1]) and not torch.equal(weights[0], weights[2])


def test_random_text_draws_a_new_set_per_seed_and_records_it(folder_dataset, tmp_path):
    encoders = []
    for seed in (0, 1):
        config = tiny_config(folder_dataset, "convformer", max_steps=1, val_every=1)
        config["seed"] = seed
        train(config, tmp_path / f"seed{seed}")
        saved = yaml.safe_load((tmp_path / f"seed{seed}" / "config.yaml").read_text())
        encoders.append(saved["text"]["encoder"])
    assert encoders == ["random:32:0", "random:32:1"]
    names = ["sky", "road", "car"]
    assert not torch.equal(
        embed_class_names(encoders[0], names), embed_class_names(encoders[1], names)
    )
    explicit = with_resolved_draws(
        {"seed": 3, "text": {"encoder": "random:32:7", "shuffle": False}}
    )
    assert explicit["text"]["encoder"] == "random:32:7"  # an explicit draw is kept


def test_models_saved_before_per_seed_draws_read_as_draw_0():
    old = {"text": {"encoder": "random:512"}, "model": {"method": "plain"}}
    assert upgrade_config(old, 3)["text"]["encoder"] == "random:512:0"
    assert upgrade_config(old, 4)["text"]["encoder"] == "random:512"


def test_shuffled_text_gives_each_class_another_class_vector(folder_dataset, tmp_path):
    order = derangement(5, 0)
    assert sorted(order.tolist()) == list(range(5)) and all(order != torch.arange(5))
    assert torch.equal(derangement(5, 0), order) and not all(
        torch.equal(derangement(5, k), order) for k in range(1, 4)
    )
    config = tiny_config(folder_dataset, "convformer", max_steps=1, val_every=1)
    config["text"]["shuffle"] = True
    config["seed"] = 2
    train(config, tmp_path / "shuffled")
    saved = yaml.safe_load((tmp_path / "shuffled" / "config.yaml").read_text())
    assert saved["text"]["shuffle"] == 2  # the draw is recorded
    names = ["sky", "road", "car"]
    real = embed_class_names(saved["text"]["encoder"], names)
    model = create_model_from_config(with_resolved_draws(config), names, pretrained=False)
    assert torch.equal(model.head.text_embeddings, real[derangement(3, 2)])
