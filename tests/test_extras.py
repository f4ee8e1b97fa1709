"""Training, the CLIP text encoders, serving, ONNX, the smp reference and plotting are
optional extras: the core imports none of them, and a missing one
is a one-line error naming the extra to install."""

import subprocess
import sys
import textwrap

import pytest
from torch import nn

from clipfuse.errors import ClipfuseError
from clipfuse.extras import EXTRAS

# matplotlib aside: torchmetrics imports it wherever it is installed (it reads the package
# metadata, which hiding the module does not change); without it installed, it does not.
BLOCKED = sorted(m for modules in EXTRAS.values() for m in modules if m != "matplotlib")


def test_the_core_imports_no_extra():
    script = textwrap.dedent(
        f"""
        import sys
        from importlib.machinery import PathFinder

        class NotInstalled(PathFinder):  # finds no extra, as when they are not installed
            @classmethod
            def find_spec(cls, name, path=None, target=None):
                if name.split(".")[0] in {BLOCKED!r}:
                    return None
                return super().find_spec(name, path, target)

        sys.meta_path[sys.meta_path.index(PathFinder)] = NotInstalled
        import clipfuse.research.bench.bench, clipfuse.build, clipfuse.cli, clipfuse.evaluation
        import clipfuse.inference, clipfuse.inference.export, clipfuse.inference.serve
        import clipfuse.data, clipfuse.models, clipfuse.text
        from clipfuse.errors import ClipfuseError

        try:  # the training engine says which extra it needs
            import clipfuse.engine
        except ClipfuseError as error:
            assert "pip install 'clipfuse[train]'" in str(error), error
        else:
            raise AssertionError("clipfuse.engine imported without the train extra")
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=300)


@pytest.mark.parametrize(
    ("module", "call", "message"),
    [
        (
            "fastapi",
            lambda: __import__("clipfuse.inference.serve").inference.serve.create_app(None),
            "clipfuse serve needs fastapi, which is not installed: pip install 'clipfuse[serve]'",
        ),
        (
            "onnx",
            lambda: __import__("clipfuse.inference.export").inference.export.export_onnx(
                nn.Identity(), "never.onnx", exporter="torchscript"
            ),
            "ONNX export needs onnx, which is not installed: pip install 'clipfuse[export]'",
        ),
        (
            "segmentation_models_pytorch",
            lambda: __import__(
                "clipfuse.research.bench.candidates"
            ).research.bench.candidates.create_from_spec(
                {"smp": {"backbone": "mobilenetv2_100", "classes": 3}}
            ),
            "needs segmentation_models_pytorch, which is not installed: pip install 'clipfuse[bench]'",
        ),
        (
            "open_clip",
            lambda: __import__(
                "clipfuse.text.open_clip_encoder"
            ).text.open_clip_encoder.load_open_clip_text("ViT-B-16", "openai"),
            "text encoder 'open_clip:ViT-B-16/openai' needs open_clip, which is not installed: "
            "pip install 'clipfuse[clip]'",
        ),
        (
            "transformers",
            lambda: __import__("clipfuse.text.hf_encoder").text.hf_encoder.load_hf_text("a/b"),
            "text encoder 'hf:a/b' needs transformers, which is not installed: "
            "pip install 'clipfuse[clip]'",
        ),
        (
            "torchmetrics",
            lambda: __import__("clipfuse.evaluation").evaluation.SegmentationMetrics,
            "needs torchmetrics, which is not installed: pip install 'clipfuse[train]'",
        ),
    ],
    ids=["serve", "export", "bench", "clip", "hf", "metrics"],
)
def test_a_missing_extra_is_a_one_line_error_naming_it(monkeypatch, module, call, message):
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ClipfuseError) as error:
        call()
    assert message in str(error.value) and "\n" not in str(error.value)


def test_without_matplotlib_the_report_is_written_without_its_plot(monkeypatch, tmp_path, capsys):
    from clipfuse.research.experiments import load_spec
    from clipfuse.research.experiments.report import write_report

    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(
        "name: empty\nbase: configs/plain_mobilenetv2_camvid_192x256_140.yaml\nruns: {plain: {}}\n"
    )
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    written = write_report(load_spec(spec_path), tmp_path / "out")
    assert {path.name for path in written} >= {"results.json", "results.md"}
    assert not (tmp_path / "out" / "results.png").exists()
    assert "note: results.png not written: the experiment plot needs matplotlib" in (
        capsys.readouterr().err
    )
