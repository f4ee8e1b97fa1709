"""Config files and overrides (clipfuse.config): mappings are replaced, null or {} clear them,
and the cleared value reaches the run's config."""

import pytest
import yaml
from helpers import tiny_config

from clipfuse.config import load_config
from clipfuse.engine import train
from clipfuse.errors import ClipfuseError


def test_mapping_overrides_replace_and_null_or_empty_clear(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "model": {"method": "convformer", "head_kwargs": {"dim": 32, "heads": 2}},
                "text": {"aliases": {"Pavement": "sidewalk", "Pedestrian": "person"}},
            }
        )
    )
    assert len(load_config(path)["text"]["aliases"]) == 2
    assert load_config(path, ["text.aliases={}"])["text"]["aliases"] == {}
    assert load_config(path, ["text.aliases=null"])["text"]["aliases"] == {}
    assert load_config(path, ["text.aliases={Car: auto}"])["text"]["aliases"] == {"Car": "auto"}
    kept = load_config(path, ["model.head_kwargs.dim=8"])["model"]["head_kwargs"]
    assert kept == {"dim": 8, "heads": 2}  # a dotted key sets one entry, keeps the others
    with pytest.raises(ClipfuseError, match="must be a mapping or null"):
        load_config(path, ["text.aliases=5"])


def test_cleared_aliases_reach_the_runs_config(world, tmp_path):
    config = tiny_config(world.data, max_steps=1, val_every=1)
    config["text"]["aliases"] = {"sky": "heaven"}
    train(config, tmp_path / "run", overrides=["text.aliases={}"])
    assert load_config(tmp_path / "run" / "config.yaml")["text"]["aliases"] == {}
