"""Train and evaluate from a config: what ``clipfuse train`` and ``clipfuse eval`` call."""

import json
import logging
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from clipfuse.build import (
    class_names_of,
    create_model_from_config,
    initialise_from,
    load_model,
)
from clipfuse.config import apply_overrides
from clipfuse.engine.batch_stream import BatchStream
from clipfuse.engine.checkpoint_io import AtomicCheckpointIO
from clipfuse.engine.class_weight import with_resolved_class_weight
from clipfuse.engine.core_watch import FollowFreeCores
from clipfuse.engine.datamodule import SegmentationDataModule
from clipfuse.engine.ema import EMA
from clipfuse.engine.lock import RunLock
from clipfuse.engine.progress import ProgressLines, StepProgressBar
from clipfuse.engine.resume import check_resumable
from clipfuse.engine.run_folder import (
    CONFIG_FILE,
    METRICS_FILE,
    changes_from_saved,
    launching_process,
    read_run_config,
    resolved_config,
    write_run_config,
)
from clipfuse.engine.stops import SafeStop
from clipfuse.engine.task import SegmentationTask
from clipfuse.errors import ClipfuseError, announce
from clipfuse.evaluation import InferenceConfig, format_table, metrics_json, results_to_json
from clipfuse.fileio import atomic_write_text, prepare_dir, prepare_file, remove_partial_files
from clipfuse.losses import loss_arguments
from clipfuse.models import Segmentor, method_uses_text
from clipfuse.precision import (
    AutocastWeights,
    inference_channels_last,
    inference_dtype,
    training_device,
)
from clipfuse.saved_model import CHECKPOINT_KEY, checkpoint_meta
from clipfuse.seeding import derive_seed, init_rng
from clipfuse.sources import with_backbone_source
from clipfuse.text.negatives import negative_embeddings
from clipfuse.text.resolve import resolve_text_encoder
from clipfuse.threads import AUTO as AUTO_THREADS
from clipfuse.threads import default_threads, use_threads

# What may change when a run is resumed: when to stop, validate, checkpoint, log and show.
RESUMABLE_KEYS = (
    "train.max_steps",
    "train.val_every",
    "train.checkpoint_every",
    "train.log_every",
    "train.progress_bar",
    "train.threads",
)

# Lightning advertises a cloud logger on every run; keep its other info lines.
logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
    lambda record: not str(record.msg).startswith("💡 Tip")
)


class _RunTask(SegmentationTask):
    """Adds the run's config and class names to every checkpoint; rank 0 reports every
    validation (the table on stdout unless ``quiet``, the JSON to ``report_path``)."""

    def __init__(
        self,
        model: Segmentor,
        class_names: list[str],
        config: dict,
        report_path: Path | None = None,
        quiet: bool = False,
        negatives: torch.Tensor | None = None,
    ) -> None:
        train = config["train"]
        # only a training with text.negatives reads their keys: the config of an exported
        # ONNX file, evaluated through this task, may predate them
        drawn = {}
        if negatives is not None:
            drawn = {
                "negatives_per_step": config["text"]["negatives_per_step"],
                "negatives_seed": derive_seed(config["seed"], "negatives"),
            }
        super().__init__(
            model,
            class_names,
            optim=dict(
                optimizer=train["optimizer"],
                lr=train["lr"],
                weight_decay=train["weight_decay"],
                momentum=train["momentum"],
                backbone_lr_mult=train["backbone_lr_mult"],
                head_lr_mult=train["head_lr_mult"],
            ),
            max_steps=train["max_steps"],
            warmup_steps=train["warmup_steps"],
            poly_power=train["poly_power"],
            loss_args=loss_arguments(train, class_names),
            inference=InferenceConfig.from_dict(config["eval"]),
            channels_last=train["channels_last"] is True,
            negatives=negatives,
            **drawn,
        )
        self.run_config = config
        self.report_path = report_path
        self.quiet = quiet

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        if self.trainer.is_global_zero:
            _report(
                self.last_results, self.class_names, self.report_path, self.global_step, self.quiet
            )

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[CHECKPOINT_KEY] = checkpoint_meta(self.run_config, self.class_names)


def _datamodule(
    config: dict, mean: Sequence[float], std: Sequence[float]
) -> SegmentationDataModule:
    return SegmentationDataModule(mean=mean, std=std, seed=config["seed"], **config["data"])


def _trainer(config: dict, out_dir: Path, callbacks: list | None = None) -> L.Trainer:
    """The Lightning trainer of a run: a progress bar on a terminal, else plain lines."""
    train = config["train"]
    progress_bar = train["progress_bar"] and sys.stdout.isatty()
    callbacks = list(callbacks or [])
    callbacks.append(StepProgressBar() if progress_bar else ProgressLines(train["log_every"]))
    return L.Trainer(
        max_steps=train["max_steps"],
        accelerator=train["accelerator"],
        devices=train["devices"],
        num_nodes=train["num_nodes"],
        strategy=train["strategy"],
        precision=train["precision"],
        val_check_interval=train["val_every"],
        check_val_every_n_epoch=None,
        log_every_n_steps=train["log_every"],
        enable_progress_bar=progress_bar,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        logger=[
            # A new version_N per (re)start: a resumed run never overwrites earlier logs.
            TensorBoardLogger(out_dir / "logs", name="tensorboard"),
            CSVLogger(out_dir / "logs", name="csv"),
        ],
        default_root_dir=out_dir,
        num_sanity_val_steps=0,
        enable_model_summary=False,
    )


@contextmanager
def _expected_warnings() -> Iterator[None]:
    """Silence Lightning warnings that are expected here and would only alarm users."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        warnings.filterwarnings("ignore", ".*module\\(s\\) in eval mode.*")  # frozen BatchNorm
        warnings.filterwarnings("ignore", ".*LeafSpec.*")  # Lightning vs torch 2.14, harmless
        warnings.filterwarnings("ignore", ".*overridden `on_after_batch_transfer`.*")  # ours
        # Logging counts steps across epochs (max_steps runs): short epochs are fine.
        warnings.filterwarnings("ignore", ".*smaller than the logging interval.*")
        # The sampler resumes mid-epoch where the checkpoint stopped (clipfuse.data.sampling).
        warnings.filterwarnings("ignore", ".*your dataloader is not resumable.*")
        yield


def _run_config(
    config: dict | None, out_dir: Path, resume: bool, overrides: Sequence[str], check: bool
) -> tuple[dict, str | None]:
    """The config to train with, as this machine resolves it, and the note announcing an
    automatic choice (:func:`resolved_config`). A new run refuses a folder that holds one; a
    resumed run starts from the saved config, applies the changes in ``RESUMABLE_KEYS``
    (announced) and refuses any other change."""
    saved_path = out_dir / CONFIG_FILE
    last = out_dir / "checkpoints" / "last.ckpt"
    if not resume:
        if config is None:
            raise ClipfuseError("train needs a config (or resume=True with the folder of a run)")
        if check and last.exists():
            raise ClipfuseError(
                f"{out_dir} already holds a run: pass --resume to continue it, or another --out"
            )
        if check and saved_path.exists():
            raise ClipfuseError(
                f"{out_dir} already holds a run that stopped before its first checkpoint "
                f"({saved_path}, no {last}): pass --resume to start it again from step 0, or "
                "another --out"
            )
        return resolved_config(apply_overrides(config, overrides))
    if not saved_path.is_file():
        raise ClipfuseError(
            f"cannot resume: {saved_path} not found (no run was started in {out_dir})"
        )
    wanted = read_run_config(out_dir) if config is None else config
    wanted, changed = changes_from_saved(out_dir, apply_overrides(wanted, overrides))
    refused = {key: change for key, change in changed.items() if key not in RESUMABLE_KEYS}
    if refused:
        listed = ", ".join(f"{key} ({old!r} -> {new!r})" for key, (old, new) in refused.items())
        raise ClipfuseError(
            f"cannot resume {out_dir} with changed settings {listed}: only "
            f"{', '.join(RESUMABLE_KEYS)} may change on resume (train into another --out to "
            "change the others)"
        )
    listed = "".join(f", {key} {old!r} -> {new!r}" for key, (old, new) in changed.items())
    announce(f"resuming with the config saved in {saved_path}{listed}")
    return wanted, None


def train(
    config: dict | None,
    out_dir: str | Path,
    resume: bool = False,
    callbacks: list | None = None,
    overrides: Sequence[str] = (),
) -> dict:
    """Train (or continue) the run in ``out_dir``; evaluate on val; return the metrics.

    The run holds ``out_dir/.lock`` while it lives: a second training into the same folder is
    refused. A new run refuses a folder that already holds one (``config.yaml``). The full
    config is written to ``out_dir/config.yaml`` (its format version to ``format.json``,
    :mod:`clipfuse.engine.run_folder`) before training; checkpoints go to
    ``out_dir/checkpoints`` (``last.ckpt`` every ``train.checkpoint_every`` steps, written
    atomically); ``resume=True`` continues from ``last.ckpt`` with its step, optimiser and
    schedule, from the config saved in the folder (``config``, if given, and ``overrides``
    may change only ``RESUMABLE_KEYS``). ``overrides`` (``section.key=value``) apply on top
    of ``config``. Extra Lightning ``callbacks`` are added to the trainer. Metrics go to
    ``out_dir/metrics.json``.
    """
    out_dir = Path(out_dir)
    checkpoint_dir = out_dir / "checkpoints"
    last = checkpoint_dir / "last.ckpt"
    launching = launching_process()
    with RunLock(out_dir) if launching else nullcontext():
        if launching:
            for folder in (out_dir, checkpoint_dir):
                remove_partial_files(folder)
        torch.set_num_threads(default_threads())  # what `auto` precision's probe runs with
        config, note = _run_config(config, out_dir, resume, overrides, check=launching)
        if note and launching:
            announce(f"{note}; set train.precision and train.channels_last to choose")
        use_threads(config["train"]["threads"], say=launching)
        if config["train"]["threads"] == AUTO_THREADS:  # re-chosen while it trains
            callbacks = [FollowFreeCores(say=launching), *(callbacks or [])]
        return _fit(config, out_dir, last, resume, callbacks)


def _fit(config: dict, out_dir: Path, last: Path, resume: bool, callbacks: list | None) -> dict:
    """Train with the seeding of :mod:`clipfuse.seeding`: the model is built under its own
    generator, the data stream comes from the seed alone, and the batches are recorded."""
    L.seed_everything(config["seed"], verbose=False)  # dropout; data and init: clipfuse.seeding
    class_names = class_names_of(config)
    if method_uses_text(config["model"]["method"]):  # config.yaml names the encoder used
        config = resolve_text_encoder(config, class_names)
    config = with_resolved_class_weight(config)  # config.yaml records the list
    resuming = resume and last.exists()
    if not resuming:  # config.yaml names the backbone weights used (timm's if shared: is absent)
        config = with_backbone_source(config)
    with init_rng(config["seed"]):  # resuming: the checkpoint holds every weight
        model = create_model_from_config(config, class_names, pretrained=not resuming)
    if config["train"]["init_from"] is not None and not resuming:
        with torch.random.fork_rng(devices=[]):  # draws nothing from the run's generator
            initialise_from(model, config, class_names)
    if resume and last.exists():  # the checks of eval and clipfuse.load, and that it is this run's
        check_resumable(last, config, class_names, model, RESUMABLE_KEYS)
    negatives = negative_embeddings(config, class_names)
    task = _RunTask(
        model, class_names, config, report_path=out_dir / METRICS_FILE, negatives=negatives
    )
    datamodule = _datamodule(config, model.backbone.mean, model.backbone.std)
    datamodule.check_files()
    checkpoints = ModelCheckpoint(  # only last.ckpt: a Conv-Former checkpoint with AdamW is ~0.7 GB
        dirpath=last.parent,
        every_n_train_steps=config["train"]["checkpoint_every"],
        save_last=True,
        save_top_k=0,
        enable_version_counter=False,  # the run lock makes last.ckpt this run's own
    )
    stop = SafeStop(last)  # a diverged loss, SIGTERM and Ctrl-C
    callbacks = [checkpoints, stop, BatchStream(out_dir), *(callbacks or [])]
    if config["train"]["ema_decay"] is not None:  # validation and checkpoints hold the average
        callbacks.append(EMA(config["train"]["ema_decay"]))
    trainer = _trainer(config, out_dir, callbacks)  # writes nothing yet
    datamodule.check_batches(trainer.world_size)  # needs the trainer's number of processes
    write_run_config(out_dir, config)
    ckpt_path = None
    if resume and last.exists():
        ckpt_path = str(last)
    elif resume:
        announce(f"no checkpoint in {last.parent} yet: starting from step 0")
    with _expected_warnings(), stop.signals(out_dir):
        trainer.fit(task, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        trainer.save_checkpoint(last, weights_only=False)  # full state, so --resume can continue
        if _reported_step(out_dir) != config["train"]["max_steps"]:  # else fit just validated
            trainer.validate(task, datamodule=datamodule, verbose=False)
    # Read back what rank 0 wrote: with ddp_spawn the workers hold the results, not this process.
    return json.loads((out_dir / METRICS_FILE).read_text())


def _reported_step(out_dir: Path) -> int | None:
    """The step of the last validation written to ``metrics.json``, if any."""
    path = out_dir / METRICS_FILE
    return json.loads(path.read_text()).get("step") if path.is_file() else None


def _report(
    results: dict, class_names: list[str], path: Path | None, step: int, quiet: bool = False
) -> None:
    if not quiet:
        print(f"\nvalidation at step {step}\n{format_table(results, class_names)}", flush=True)
    if path is not None:
        payload = {**results_to_json(results, class_names), "step": step}
        atomic_write_text(path, metrics_json(payload))


def _model_to_evaluate(path: str | Path, overrides: Sequence[str], trained: bool) -> tuple:
    """``(model, config, class_names, mean, std)`` of a checkpoint, pretrained folder or ONNX
    file from ``clipfuse export`` (run by onnxruntime on the CPU)."""
    if Path(path).suffix == ".onnx":
        if trained:
            raise ClipfuseError(f"{path}: an exported model holds one set of weights")
        from clipfuse.inference.export import OnnxLogits

        model = OnnxLogits(path)
        config = apply_overrides(model.config, [*overrides, "train.accelerator=cpu"])
        return model, config, model.class_names, model.mean, model.std
    loaded = load_model(path, overrides, trained)
    model = loaded.segmentor
    return model, loaded.config, loaded.class_names, model.backbone.mean, model.backbone.std


def evaluate(
    checkpoint: str | Path,
    overrides: list[str] | None = None,
    json_path: str | Path | None = None,
    quiet: bool = False,
    trained: bool = False,
) -> dict:
    """Evaluate a checkpoint (or an exported ``.onnx`` file, fp32 or int8) on its dataset's
    ``data.eval_split`` (``val`` unless overridden; ``data.*`` / ``eval.*`` overridable);
    ``trained``: a ``train.ema_decay`` checkpoint's trained weights, not their average."""
    if json_path is not None:
        prepare_file(json_path, "metrics file")  # before the evaluation, not after it
    model, config, class_names, mean, std = _model_to_evaluate(checkpoint, overrides or (), trained)
    dataset_classes = class_names_of(config)
    if dataset_classes != class_names:
        raise ClipfuseError(
            f"checkpoint {checkpoint} was trained on {len(class_names)} classes "
            f"({', '.join(class_names[:5])}, ...) but dataset {config['data']['dataset']!r} has "
            f"{len(dataset_classes)} ({', '.join(dataset_classes[:5])}, ...)"
        )
    report_path = Path(json_path) if json_path else None
    device = training_device(config["train"]["accelerator"])
    # Autocast and layout come from eval.precision (in infer_probabilities) and this machine,
    # not from how the run was trained.
    single = {"devices": 1, "num_nodes": 1, "strategy": "auto", "precision": "32-true"}
    layout = {"channels_last": inference_channels_last(config["eval"]["precision"], device)}
    config = {**config, "train": {**config["train"], **single, **layout, "progress_bar": not quiet}}
    task = _RunTask(model, class_names, config, report_path=report_path, quiet=quiet)
    folder = Path(checkpoint).resolve().parent
    log_dir = prepare_dir(
        (folder if folder.name != "checkpoints" else folder.parent) / "eval",
        "evaluation log folder",
    )
    trainer = _trainer(config, log_dir)
    weights = AutocastWeights(model, inference_dtype(config["eval"]["precision"], device))
    with _expected_warnings(), weights.applied():
        trainer.validate(task, datamodule=_datamodule(config, mean, std), verbose=False)
    return {
        **results_to_json(task.last_results, class_names),
        "split": config["data"]["eval_split"],
    }
