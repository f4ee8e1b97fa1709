"""Every experiment spec shipped under experiments/ parses, and each of its runs builds."""

from pathlib import Path

import pytest
import torch
from helpers import require_shared

from clipfuse.build import class_names_of, create_model_from_config
from clipfuse.research.experiments import load_spec

SPECS = sorted(Path("experiments").glob("*.yaml"))


def test_there_are_shipped_specs():
    assert SPECS, "experiments/*.yaml is empty"


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_every_run_of_a_shipped_spec_builds_its_model(path):
    require_shared("text/clip-vitb16")
    spec = load_spec(path)
    assert spec.report_dir is not None, f"{path}: results of a shipped spec belong in docs/"
    seen = set()
    for run in spec.runs:
        config = run.config(run.seeds[0])
        key = repr(sorted((k, repr(v)) for k, v in config.items() if k != "seed"))
        key += f" trained weights: {run.trained_weights}"  # an evaluation run's other weights
        assert key not in seen, f"{path}: run {run.name!r} repeats another run's config"
        seen.add(key)
        with torch.device("meta"):
            model = create_model_from_config(config, class_names_of(config), pretrained=False)
        assert model.num_classes == len(class_names_of(config))


@pytest.mark.parametrize(
    "path", sorted(Path("experiments").glob("*/*.yaml")), ids=lambda p: f"{p.parent.name}/{p.stem}"
)
def test_every_config_beside_the_specs_loads_and_builds(path):
    from clipfuse.config import load_config

    config = load_config(path)
    with torch.device("meta"):
        model = create_model_from_config(config, class_names_of(config), pretrained=False)
    assert model.num_classes == len(class_names_of(config))
