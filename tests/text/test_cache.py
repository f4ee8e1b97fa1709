"""``create_text_encoder`` and the on-disk cache of ``embed_class_names`` (registry, cache)."""

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
    cache_key,
    create_text_encoder,
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
            create_text_encoder(spec)
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


@pytest.mark.parametrize(
    "bad, fragment",
    [
        (torch.ones(3, 4).index_fill(1, torch.tensor([1]), float("nan")), "not finite (NaN or"),
        (torch.ones(2, 4), "holds a 2x4 matrix, expected 3 rows (one per class) of width 4"),
        (torch.ones(3, 7), "holds a 3x7 matrix, expected 3 rows (one per class) of width 4"),
        (torch.ones(3, 4, 1), "holds a 3x4x1 torch.float32 tensor, expected a 3x4 float32"),
        (torch.ones(3), "holds a 3 torch.float32 tensor, expected a 3x4 float32 matrix"),
        (torch.ones(3, 4, dtype=torch.float64), "holds a 3x4 torch.float64 tensor"),
        (torch.ones(3, 4, dtype=torch.int64), "holds a 3x4 torch.int64 tensor"),
        ({"other": torch.ones(3, 4)}, "holds no 'embeddings' tensor"),
    ],
    ids=["nan", "rows", "width", "3d", "1d", "float64", "int64", "no-key"],
)
def test_a_cache_entry_with_nan_or_another_shape_is_recomputed_and_said(
    tmp_path: Path, builds: list[str], capsys: pytest.CaptureFixture, bad, fragment
) -> None:
    from safetensors.torch import save_file

    embed_class_names("random:4", NAMES, cache_dir=tmp_path)
    (entry,) = tmp_path.iterdir()
    save_file(bad if isinstance(bad, dict) else {"embeddings": bad}, entry)
    capsys.readouterr()
    again = embed_class_names("random:4", NAMES, cache_dir=tmp_path)
    assert len(builds) == 2 and torch.equal(again, RandomEncoder(4).encode(NAMES))
    (note,) = capsys.readouterr().err.splitlines()
    assert note.startswith(f"note: text-embedding cache {entry} ") and fragment in note
    assert note.endswith("computing the embeddings again")
    assert torch.equal(embed_class_names("random:4", NAMES, cache_dir=tmp_path), again)
    assert len(builds) == 2  # the rewritten entry is used


def test_a_cached_matrix_of_another_width_than_the_caller_needs_is_recomputed(
    tmp_path: Path, builds: list[str], capsys: pytest.CaptureFixture
) -> None:
    """An encoder whose spec does not fix its width (a bank, open_clip): the caller's does."""
    embed_class_names("random:4", NAMES, cache_dir=tmp_path)
    capsys.readouterr()
    with pytest.raises(ClipfuseError, match="random:4 gave .* 3x4 matrix, expected .* width 8"):
        embed_class_names("random:4", NAMES, cache_dir=tmp_path, width=8)
    assert "expected 3 rows (one per class) of width 8" in capsys.readouterr().err
    assert len(builds) == 2


def test_an_encoder_that_gives_nan_is_an_error_and_nothing_is_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        RandomEncoder, "encode", lambda self, names, template: torch.full((3, 4), float("nan"))
    )
    with pytest.raises(ClipfuseError, match="random:4 gave embeddings .* not finite"):
        embed_class_names("random:4", NAMES, cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_invalid_inputs_fail_before_any_work(tmp_path: Path, builds: list[str]) -> None:
    with pytest.raises(ClipfuseError, match="duplicate"):
        embed_class_names("random:4", ["sky", "Sky"], cache_dir=tmp_path)
    with pytest.raises(ClipfuseError, match="template"):
        embed_class_names("random:4", NAMES, "no slot", cache_dir=tmp_path)
    assert builds == [] and list(tmp_path.iterdir()) == []
