"""`auto` precision and layout on a CPU: measured by a probe, cached per key (clipfuse.cpu_probe)."""

import json

import pytest
import torch

from clipfuse import cpu_probe
from clipfuse.cpu_probe import BF16, FP32, ProbeEntry, Verdict, cpu_verdict


@pytest.fixture(autouse=True)
def fresh_memo(monkeypatch, tmp_path):
    monkeypatch.setenv("CLIPFUSE_CACHE", str(tmp_path / "cache"))  # each test its own cache
    cpu_probe._verdict.cache_clear()
    yield
    cpu_probe._verdict.cache_clear()


class FakeClock:
    """``time.perf_counter`` advanced only by the fake probe calls, by each setting's cost."""

    def __init__(self) -> None:
        self.now = 0.0
        self.calls: dict[str, int] = {}

    def __call__(self) -> float:
        return self.now


def _fake_probe(monkeypatch, seconds: dict[str, float]) -> FakeClock:
    clock = FakeClock()

    def runner(purpose, precision, channels_last):
        name = cpu_probe.setting_name(precision, channels_last)

        def call() -> None:
            clock.calls[name] = clock.calls.get(name, 0) + 1
            clock.now += seconds[name]

        return call

    monkeypatch.setattr(cpu_probe, "_runner", runner)
    monkeypatch.setattr(cpu_probe.time, "perf_counter", clock)
    return clock


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        # an AVX512-BF16 CPU without AMX: bf16 slower, channels-last a little faster
        ({"fp32": 0.175, "fp32-cl": 0.156, "bf16": 0.287, "bf16-cl": 0.277}, (FP32, True)),
        # a CPU with fast bf16: about 2x
        ({"fp32": 0.100, "fp32-cl": 0.098, "bf16": 0.070, "bf16-cl": 0.050}, (BF16, True)),
        # within the margin: fp32 contiguous stays
        ({"fp32": 0.100, "fp32-cl": 0.098, "bf16": 0.097, "bf16-cl": 0.095}, (FP32, False)),
    ],
)
def test_the_fastest_setting_wins_and_each_departure_must_earn_its_margin(
    monkeypatch, seconds, expected
):
    _fake_probe(monkeypatch, seconds)
    verdict = cpu_probe.measure("train")
    assert (verdict.precision, verdict.channels_last) == expected
    assert verdict.ms == {name: pytest.approx(1000 * s) for name, s in seconds.items()}


def test_a_setting_far_slower_than_the_best_is_timed_once_not_every_round(monkeypatch):
    # no native bf16 (AVX2): emulated bf16 is tens of times slower
    clock = _fake_probe(monkeypatch, {"fp32": 0.01, "fp32-cl": 0.011, "bf16": 0.4, "bf16-cl": 0.3})
    verdict = cpu_probe.measure("inference")
    assert (verdict.precision, verdict.channels_last) == (FP32, False)
    assert clock.calls["bf16"] == clock.calls["bf16-cl"] == 2  # the warm-up and one timed call
    assert clock.calls["fp32"] == cpu_probe.ROUNDS + 1
    assert "bf16 0.03x" in verdict.speedups() and "fp32-cl 0.91x" in verdict.speedups()


def test_a_slow_first_call_does_not_drop_the_fastest_setting(monkeypatch):
    # fp32's first call builds its kernels (50x a warm call); warm, it is the fastest
    clock = _fake_probe(monkeypatch, {"fp32": 0.01, "fp32-cl": 0.02, "bf16": 0.03, "bf16-cl": 0.03})
    warm = cpu_probe._runner

    def runner(purpose, precision, channels_last):
        call = warm(purpose, precision, channels_last)
        first = [precision == FP32 and not channels_last]

        def timed() -> None:
            if first[0]:
                first[0] = False
                clock.now += 0.49
            call()

        return timed

    monkeypatch.setattr(cpu_probe, "_runner", runner)
    verdict = cpu_probe.measure("train")
    assert (verdict.precision, verdict.channels_last) == (FP32, False)
    assert verdict.ms["fp32"] == pytest.approx(10)
    assert clock.calls["fp32"] == cpu_probe.ROUNDS + 1


def test_the_real_probe_measures_every_setting_on_this_cpu():
    verdict = cpu_probe.measure("inference")
    assert set(verdict.ms) == {"fp32", "fp32-cl", "bf16", "bf16-cl"}
    assert all(ms > 0 for ms in verdict.ms.values())
    fastest = min(verdict.ms, key=verdict.ms.get)
    chosen = cpu_probe.setting_name(verdict.precision, verdict.channels_last)
    assert verdict.ms[chosen] <= cpu_probe.MARGIN**2 * verdict.ms[fastest]


def _counting_measure(monkeypatch) -> list[str]:
    measured: list[str] = []

    def measure(purpose):
        measured.append(purpose)
        return Verdict(
            precision=FP32,
            channels_last=True,
            ms=dict.fromkeys(("fp32", "fp32-cl", "bf16", "bf16-cl"), 1.0),
        )

    monkeypatch.setattr(cpu_probe, "measure", measure)
    return measured


def test_the_verdict_is_measured_once_then_read_from_the_cache(monkeypatch):
    measured = _counting_measure(monkeypatch)
    verdict, source = cpu_verdict("train")
    assert measured == ["train"] and "measured on this CPU now" in source
    path = cpu_probe.cache_path(cpu_probe.probe_key())
    assert str(path) in source
    entry = json.loads(path.read_text())
    assert entry["key"] == cpu_probe.probe_key() and entry["train"]["channels_last"] is True
    cpu_probe._verdict.cache_clear()  # a new process
    again, source = cpu_verdict("train")
    assert again == verdict and measured == ["train"] and "earlier" in source
    cpu_verdict("inference")  # the other purpose is measured once too, into the same file
    assert measured == ["train", "inference"]
    assert json.loads(path.read_text())["train"] == entry["train"]


def test_the_inference_verdict_is_announced_when_measured_not_when_read(monkeypatch, capsys):
    _counting_measure(monkeypatch)
    cpu_verdict("inference")
    assert capsys.readouterr().err.startswith(
        "note: `auto` inference on this CPU: fp32 with channels-last tensors (speed against fp32 "
        "contiguous: fp32-cl 1.00x, bf16 1.00x, bf16-cl 1.00x; measured on this CPU now, cached in"
    )
    cpu_probe._verdict.cache_clear()
    cpu_verdict("inference")
    cpu_verdict("train")  # training announces its own choice (clipfuse.precision)
    assert capsys.readouterr().err == ""


def test_the_key_names_the_cpu_torch_and_threads(monkeypatch):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = cpu_probe.probe_key()
        torch.set_num_threads(2)
        assert one != cpu_probe.probe_key() and one.endswith("| 1 threads")
    finally:
        torch.set_num_threads(before)
    assert torch.__version__ in one and cpu_probe.cpu_name() in one


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"\x00\xff\xfe",
        b'{"format": 3, "key": "%s", "train": {"precision": "fp8", "channels_last": 1, "ms": {}}}',
        b'{"format": 3, "key": "another CPU | torch 2.0 | 64 threads", "train": '
        b'{"precision": "bf16-mixed", "channels_last": true, "ms": {"fp32": 1, "fp32-cl": 1, '
        b'"bf16": 1, "bf16-cl": 1}}}',
        b'{"format": 99, "key": "%s"}',
        b'{"format": 2, "key": "%s", "train": {"precision": "32-true", "channels_last": false, '
        b'"ms": {"fp32": 1, "fp32-cl": 1, "bf16": 1, "bf16-cl": 1}}}',
    ],
    ids=["truncated", "binary", "malformed", "foreign", "future-format", "older-format"],
)
def test_a_corrupt_or_foreign_cache_file_is_measured_again_and_replaced(monkeypatch, content):
    measured = _counting_measure(monkeypatch)
    key = cpu_probe.probe_key()
    path = cpu_probe.cache_path(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.replace(b"%s", key.encode()) if b"%s" in content else content)
    verdict, _ = cpu_verdict("train")
    assert measured == ["train"] and verdict.precision == FP32
    assert ProbeEntry.model_validate_json(path.read_bytes()).key == key


def test_an_unwritable_cache_costs_a_probe_and_says_so(monkeypatch, tmp_path):
    measured = _counting_measure(monkeypatch)
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("CLIPFUSE_CACHE", str(blocker))  # the cache folder is a file
    verdict, source = cpu_verdict("inference")
    assert measured == ["inference"] and "not cached: cannot write" in source
