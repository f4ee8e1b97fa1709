"""Name normalisation and the validation every encoder applies (clipfuse.text.base, prompts)."""

import pytest

from clipfuse.errors import ClipfuseError
from clipfuse.text import RandomEncoder, normalize_name, validate_class_names


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Sky", "sky"),
        ("bed ", "bed"),
        ("traffic_light", "traffic light"),
        ("  Chest-of  drawers ", "chest of drawers"),
        ("a__b--c", "a b c"),
    ],
)
def test_normalize_name(raw: str, expected: str) -> None:
    assert normalize_name(raw) == expected


def test_validate_accepts_and_returns_list() -> None:
    assert validate_class_names(("sky", "road")) == ["sky", "road"]


@pytest.mark.parametrize(
    ("names", "fragment"),
    [
        ([], "empty list"),
        (["sky", "  "], "name 1 is empty or blank"),
        (["sky", ""], "name 1 is empty or blank"),
        ("sky", "got the string"),
        (["Sky", "road", "sky "], "duplicate name 'sky' ('Sky' and 'sky ')"),
        (["traffic_light", "Traffic Light"], "duplicate name 'traffic light'"),
    ],
)
def test_validate_rejects(names: list[str], fragment: str) -> None:
    with pytest.raises(ClipfuseError, match="class names") as info:
        validate_class_names(names)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("template", ["a photo", "{} and {}", [], ["a {}.", "no slot"]])
def test_bad_templates_rejected(template: str | list[str]) -> None:
    with pytest.raises(ClipfuseError, match="template"):
        RandomEncoder(4).encode(["sky"], template)


def test_encode_validates_names() -> None:
    with pytest.raises(ClipfuseError, match="duplicate"):
        RandomEncoder(4).encode(["sky", "SKY"])
