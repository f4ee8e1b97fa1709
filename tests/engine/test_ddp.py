"""Two CPU processes (gloo) train a few steps with DDP and end with identical weights."""

import json
from pathlib import Path

import lightning as L
import torch
from helpers import tiny_config

from clipfuse.engine import train


class ParameterChecksums(L.Callback):
    """After training, every rank reports a checksum of its weights; rank 0 writes them all."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_end(self, trainer, module) -> None:
        checksum = torch.stack([p.detach().double().sum() for p in module.parameters()]).sum()
        gathered = trainer.strategy.all_gather(checksum.float().reshape(1))
        if trainer.is_global_zero:
            Path(self.path).write_text(
                json.dumps(
                    {"world_size": trainer.world_size, "checksums": gathered.flatten().tolist()}
                )
            )


def test_two_process_ddp_on_cpu_keeps_ranks_in_sync(folder_dataset, tmp_path):
    report = tmp_path / "checksums.json"
    config = tiny_config(
        folder_dataset,
        max_steps=3,
        strategy="ddp_spawn",
        devices=2,
        checkpoint_every=3,
        val_every=3,
    )
    results = train(config, tmp_path / "run", callbacks=[ParameterChecksums(str(report))])
    gathered = json.loads(report.read_text())
    assert gathered["world_size"] == 2
    first, second = gathered["checksums"]
    assert first == second
    assert 0.0 <= results["mIoU"] <= 100.0
