"""The real CCP and LabelMeFacade of ../shared/data load through the registry, and the CCP
protocol of configs/_base_/ccp.yaml gives every scored class its own CLIP vector."""

from pathlib import Path

import numpy as np
import pytest
from helpers import require_shared

from clipfuse.data import CCP, LabelMeFacade, create_dataset

CCP_PROTOCOL = Path(__file__).resolve().parents[2] / "configs" / "_base_" / "ccp.yaml"


@pytest.mark.parametrize(
    ("name", "cls", "sizes", "classes"),
    [("ccp", CCP, (604, 200), 59), ("labelmefacade", LabelMeFacade, (100, 345), 8)],
)
def test_shared_folder(name, cls, sizes, classes):
    root = require_shared(f"data/{name}")
    train, val = create_dataset(name, "train"), create_dataset(name, "val", root=root)
    assert isinstance(train, cls) and (len(train), len(val)) == sizes
    assert train.num_classes == classes
    image, mask = val[0]
    assert image.dtype == np.uint8 and image.shape == (*mask.shape, 3)
    assert set(np.unique(mask)) <= set(range(classes)) | {255}


def test_ccp_protocol_gives_every_scored_class_its_own_vector():
    require_shared("data/ccp")
    require_shared("text/clip-vitb32/lvis1203.npy")
    from clipfuse.build import class_names_of
    from clipfuse.config import load_config
    from clipfuse.text.aliases import apply_aliases
    from clipfuse.text.bank import BankEncoder
    from clipfuse.text.base import normalize_name
    from clipfuse.text.resolve import text_spec

    config = load_config(CCP_PROTOCOL)
    names = class_names_of(config)
    assert len(names) == 44 and "null" not in names and "heels" not in names
    bank = BankEncoder(text_spec(config, names).removeprefix("bank:"))
    queries = apply_aliases(names, config["text"]["aliases"])
    rows = [bank.index.get(normalize_name(query)) for query in queries]
    missing = [name for name, row in zip(names, rows, strict=True) if row is None]
    assert not missing, f"no LVIS vector for {missing}"
    assert len(set(rows)) == len(rows), "two CCP classes share one LVIS vector"
    aliased = set(config["text"]["aliases"])
    assert aliased <= set(names), f"aliases for unscored names: {aliased - set(names)}"
    dataset = create_dataset("ccp", "val", **config["data"]["dataset_kwargs"])
    _, mask = dataset[0]
    assert dataset.classes == tuple(names)
    assert set(np.unique(mask)) <= set(range(44)) | {255}
