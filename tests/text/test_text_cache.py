"""``build_text_encoder`` and the on-disk cache of ``embed_class_names`` (registry, cache)."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from clipfuse.errors import ClipfuseError
from clipfuse.text import (
    CAMVID_ALIASES,
    ENCODERS,
    RandomEncoder,
    build_text_encoder,
    cache_key,
    embed_class_names,
)
from clipfuse.text.base import TextEncoder

NAMES = ["sky", "road", "car"]


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Arguments of every ``RandomEncoder.from_spec`` call (the encoder's construction)."""
    calls: list[str] = []
    original = RandomEncoder.from_spec.__func__

    def spy(cls: type[RandomEncoder], argument: str) -> TextEncoder:
        calls.append(argument)
        return original(cls, argument)

    monkeypatch.setattr(RandomEncoder, "from_spec", classmethod(spy))
    return calls


def test_registry_knows_four_prefixes_and_rejects_others() -> None:
    assert set(ENCODERS) == {"open_clip", "hf", "bank", "random"}
    for spec in ["clip:ViT-B-16", "ViT-B-16"]:
        with pytest.raises(ClipfuseError) as info:
            build_text_encoder(spec)
        assert all(f"{prefix}:..." in str(info.value) for prefix in ENCODERS)


def test_cache_hit_does_not_build_the_encoder(tmp_path: Path, builds: list[str]) -> None:
    first = embed_class_names("random:8", NAMES, cache_dir=tmp_path)
    assert builds == ["8"]
    second = embed_class_names("random:8", NAMES, cache_dir=tmp_path)
    assert builds == ["8"]
    assert torch.equal(first, second) and second.dtype == torch.float32
    assert [p.suffix for p in tmp_path.iterdir()] == [".safetensors"]


def test_key_covers_template_aliases_names_and_spec(tmp_path: Path, builds: list[str]) -> None:
    base = cache_key("random:8", NAMES)
    assert base == cache_key("random:8", list(NAMES), "a photo of a {}.", {})
    others = {
        cache_key("random:8", NAMES, "a sketch of a {}."),
        cache_key("random:8", NAMES, ["a photo of a {}.", "a sketch of a {}."]),
        cache_key("random:8", NAMES, aliases={"sky": "heaven"}),
        cache_key("random:8", list(reversed(NAMES))),
        cache_key("random:8:1", NAMES),
    }
    assert base not in others and len(others) == 5
    embed_class_names("random:8", NAMES, cache_dir=tmp_path)
    embed_class_names("random:8", NAMES, "a sketch of a {}.", cache_dir=tmp_path)
    assert len(builds) == 2 and len(list(tmp_path.glob("*.safetensors"))) == 2


def test_aliases_are_applied(tmp_path: Path) -> None:
    aliased = embed_class_names(
        "random:8", ["Pavement", "Sky"], aliases=CAMVID_ALIASES, cache_dir=tmp_path
    )
    direct = RandomEncoder(8).encode(["sidewalk", "sky"])
    assert torch.equal(aliased, direct)


def test_bank_file_change_invalidates(tmp_path: Path) -> None:
    bank = tmp_path / "bank" / "demo.npy"
    bank.parent.mkdir()
    np.save(bank, np.eye(2, 3, dtype=np.float32))
    bank.with_suffix(".json").write_text(json.dumps({"classes": ["sky", "road"]}))
    spec = f"bank:{bank}"
    before = embed_class_names(spec, ["road"], cache_dir=tmp_path / "cache")
    key = cache_key(spec, ["road"])
    np.save(bank, 2 * np.eye(2, 3, dtype=np.float32))
    os.utime(bank, ns=(1, 1))
    assert cache_key(spec, ["road"]) != key
    after = embed_class_names(spec, ["road"], cache_dir=tmp_path / "cache")
    assert torch.equal(after, 2 * before)


def test_default_folder_and_corrupt_entry(tmp_path: Path, builds: list[str]) -> None:
    folder = Path(os.environ["CLIPFUSE_CACHE"]) / "text"
    embed_class_names("random:4", NAMES)
    (entry,) = folder.iterdir()
    entry.write_bytes(b"not a safetensors file")
    again = embed_class_names("random:4", NAMES)
    assert len(builds) == 2 and torch.equal(again, RandomEncoder(4).encode(NAMES))
    assert [p.name for p in folder.iterdir()] == [entry.name]


def test_invalid_inputs_fail_before_any_work(tmp_path: Path, builds: list[str]) -> None:
    with pytest.raises(ClipfuseError, match="duplicate"):
        embed_class_names("random:4", ["sky", "Sky"], cache_dir=tmp_path)
    with pytest.raises(ClipfuseError, match="template"):
        embed_class_names("random:4", NAMES, "no slot", cache_dir=tmp_path)
    assert builds == [] and list(tmp_path.iterdir()) == []
