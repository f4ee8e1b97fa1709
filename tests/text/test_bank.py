"""``bank:<path>``: precomputed embeddings looked up by name (clipfuse.text.bank, aliases)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import require_shared

from clipfuse.errors import ClipfuseError
from clipfuse.text import CAMVID_ALIASES, BankEncoder, create_text_encoder, embed_class_names

CAMVID = [
    "Sky", "Building", "Pole", "Road", "Pavement", "Tree",
    "SignSymbol", "Fence", "Car", "Pedestrian", "Bicyclist",
]  # fmt: skip


@pytest.fixture
def ade20k() -> tuple[Path, np.ndarray, list[str]]:
    """The shared ADE20K bank: its path, its rows and its class names."""
    path = require_shared("text/clip-vitb16/ade20k.npy")
    return path, np.load(path), json.loads(path.with_suffix(".json").read_text())["classes"]


def _write_bank(folder: Path, name: str, classes: list[str], dim: int = 4) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = np.arange(len(classes) * dim, dtype=np.float32).reshape(len(classes), dim)
    np.save(folder / f"{name}.npy", rows + 1000 * len(list(folder.glob("*.npy"))))
    (folder / f"{name}.json").write_text(json.dumps({"classes": classes}))
    return folder / f"{name}.npy"


def test_camvid_names_resolve_in_ade20k(tmp_path: Path, ade20k) -> None:
    path, table, classes = ade20k
    embeddings = embed_class_names(
        f"bank:{path}", CAMVID, aliases=CAMVID_ALIASES, cache_dir=tmp_path
    )
    assert embeddings.shape == (11, 512) and embeddings.dtype == torch.float32
    assert torch.equal(embeddings[0], torch.from_numpy(table[classes.index("sky")]))
    assert torch.equal(embeddings[4], torch.from_numpy(table[classes.index("sidewalk")]))
    assert torch.equal(embeddings[10], torch.from_numpy(table[classes.index("bicycle")]))


def test_trailing_space_entry_and_template_ignored(ade20k) -> None:
    path, table, classes = ade20k
    encoder = BankEncoder(str(path))
    bed = encoder.encode(["bed"], "a photo of a {}.")
    assert torch.equal(bed[0], torch.from_numpy(table[classes.index("bed ")]))
    assert torch.equal(bed, encoder.encode(["Bed"], "a sketch of a {}."))


def test_unknown_names_all_listed_with_the_path(ade20k) -> None:
    path, _, _ = ade20k
    with pytest.raises(ClipfuseError) as info:
        create_text_encoder(f"bank:{path}").encode(["sky", "Pavement", "Bicyclist", "unicorn"])
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    assert all(name in message for name in ("'Pavement'", "'Bicyclist'", "'unicorn'"))
    assert "'sky'" not in message


def test_folder_merges_banks_and_relative_shared_path(ade20k) -> None:
    folder = require_shared("text/clip-vitb16")
    encoder = create_text_encoder("bank:text/clip-vitb16")
    assert encoder.dim == 512
    cityscapes = np.load(folder / "cityscapes.npy")
    city_classes = json.loads((folder / "cityscapes.json").read_text())["classes"]
    both = encoder.encode(["vegetation", "bed"])
    assert torch.equal(both[0], torch.from_numpy(cityscapes[city_classes.index("vegetation")]))
    _, table, classes = ade20k
    # ade20k.npy sorts first, so a name in both files comes from it
    sky = encoder.encode(["sky"])[0]
    assert torch.equal(sky, torch.from_numpy(table[classes.index("sky")]))


def test_comma_synonyms_match_first_part_and_full_name_wins(tmp_path: Path) -> None:
    bank = _write_bank(tmp_path, "demo", ["windowpane, window", "window", "Traffic_Light"])
    encoder = BankEncoder(str(bank))
    table = torch.from_numpy(np.load(bank))
    got = encoder.encode(["windowpane", "window", "traffic light", "windowpane, window"])
    assert torch.equal(got, table[[0, 1, 2, 0]])


def test_synthetic_folder_first_file_wins(tmp_path: Path) -> None:
    _write_bank(tmp_path, "a_first", ["sky", "road"])
    _write_bank(tmp_path, "b_second", ["sky", "tree"])
    encoder = BankEncoder(str(tmp_path))
    got = encoder.encode(["sky", "tree"])
    assert got[0, 0].item() == 0.0  # row 0 of a_first
    assert got[1, 0].item() == 1000.0 + 4  # row 1 of b_second
    assert len(BankEncoder.source_files(str(tmp_path))) == 4


def test_bank_errors(tmp_path: Path) -> None:
    with pytest.raises(ClipfuseError, match="not found"):
        create_text_encoder(f"bank:{tmp_path / 'missing.npy'}")
    with pytest.raises(ClipfuseError, match="holds no .npy"):
        create_text_encoder(f"bank:{tmp_path}")
    np.save(tmp_path / "lonely.npy", np.zeros((2, 4), np.float32))
    with pytest.raises(ClipfuseError, match="lonely.json"):
        create_text_encoder(f"bank:{tmp_path / 'lonely.npy'}")
    (tmp_path / "lonely.json").write_text(json.dumps({"classes": ["only one"]}))
    with pytest.raises(ClipfuseError, match="one row per entry"):
        create_text_encoder(f"bank:{tmp_path / 'lonely.npy'}")
    _write_bank(tmp_path / "mixed", "a", ["sky"], dim=4)
    _write_bank(tmp_path / "mixed", "b", ["road"], dim=8)
    with pytest.raises(ClipfuseError, match="dimension 8 differs from 4"):
        create_text_encoder(f"bank:{tmp_path / 'mixed'}")


def test_a_name_the_bank_lacks_names_both_ways_out_and_each_works(tmp_path: Path) -> None:
    """Issue 45, item 4: aliases to bank names, or an encoder that embeds any name."""
    import re
    import shlex

    from clipfuse.config import load_config
    from clipfuse.text.registry import check_spec

    path = _write_bank(tmp_path, "things", ["widget", "sky"])
    meta = json.loads(path.with_suffix(".json").read_text())
    path.with_suffix(".json").write_text(json.dumps({**meta, "clip_model": "ViT-B-32/openai"}))
    with pytest.raises(ClipfuseError) as info:
        BankEncoder(str(path)).encode(["sky", "my custom widget"])
    message = str(info.value)
    assert "\n" not in message and "'my custom widget'" in message and "'sky'" not in message
    aliases = re.search(r'(text\.aliases="[^"]*")', message).group(1)
    encoder = re.search(r"text\.encoder=(\S+)$", message).group(1)
    assert encoder == "open_clip:ViT-B-32/openai"  # the bank's own CLIP model
    assert "downloaded once" in message and "hf:<model id>" in message
    # The alias override, as a shell passes it, maps the name to a row of the bank ...
    config = load_config(None, shlex.split(aliases))
    rows = embed_class_names(
        f"bank:{path}", ["my custom widget"], aliases=config["text"]["aliases"], cache_dir=tmp_path
    )
    assert torch.equal(rows[0], BankEncoder(str(path)).encode(["widget"])[0])
    # ... and the encoder it names is a valid spec (its download: test_open_clip_download.py).
    assert check_spec(encoder) == encoder
