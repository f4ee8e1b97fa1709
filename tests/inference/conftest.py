"""One tiny trained Conv-Former (text ``random:32``, so any label can be embedded), shared by
the inference tests: its run folder, checkpoint and a saved pretrained folder."""

from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import tiny_config, write_folder_dataset


@dataclass(frozen=True)
class TinyRun:
    data: Path  # the folder dataset (classes sky, road, car)
    run: Path
    checkpoint: Path
    pretrained: Path  # save_pretrained of the checkpoint's model

    @property
    def val_images(self) -> list[Path]:
        return sorted((self.data / "images" / "val").glob("*.png"))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> TinyRun:
    import clipfuse
    from clipfuse.config import apply_overrides
    from clipfuse.engine import train

    root = tmp_path_factory.mktemp("inference")
    data = write_folder_dataset(root / "data")
    # fp32 throughout: these tests check that predict, the pretrained folder and
    # ``clipfuse eval`` give the same labels to the last bit, which holds in fp32. In bf16 the
    # paths batch images differently and agree only up to rounding (docs/research/speed.md).
    config = tiny_config(data, "convformer", max_steps=6, val_every=6, precision="32-true")
    config = apply_overrides(config, ["eval.precision=32-true"])
    train(config, root / "run")
    checkpoint = root / "run" / "checkpoints" / "last.ckpt"
    pretrained = clipfuse.load(checkpoint, device="cpu").save_pretrained(root / "pretrained")
    return TinyRun(data, root / "run", checkpoint, pretrained)


@pytest.fixture(scope="session")
def tiny_model(tiny_run):
    import clipfuse

    return clipfuse.load(tiny_run.pretrained, device="cpu")
