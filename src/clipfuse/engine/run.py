"""Train and evaluate from a config: what ``clipfuse train`` and ``clipfuse eval`` call."""

import json
import logging
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from clipfuse.backbones import clip_model_of
from clipfuse.config import (
    apply_overrides,
    dump_config,
    load_config,
    resolve_path,
    resolve_spec,
    with_defaults,
)
from clipfuse.data import dataset_classes
from clipfuse.engine.checkpoints import (
    CHECKPOINT_KEY,
    CHECKPOINT_VERSION,
    AtomicCheckpointIO,
    load_weights,
    read_checkpoint,
)
from clipfuse.engine.datamodule import SegmentationDataModule
from clipfuse.engine.lock import RunLock
from clipfuse.engine.progress import ProgressLines, StepProgressBar
from clipfuse.engine.task import SegmentationTask
from clipfuse.errors import ClipfuseError
from clipfuse.evaluation import InferenceConfig, format_table, results_to_json
from clipfuse.fileio import atomic_write_text, prepare_dir, prepare_file, remove_partial_files
from clipfuse.models import Segmentor, create_model, method_uses_text, with_legacy_head_defaults
from clipfuse.paths import shared_root
from clipfuse.precision import with_resolved_precision
from clipfuse.text import build_prompt_encoder, embed_class_names
from clipfuse.text.aliases import apply_aliases
from clipfuse.text.bank import find_bank, resolve_bank_path
from clipfuse.text.open_clip_encoder import OpenClipEncoder
from clipfuse.text.registry import split_spec

# What may change when a run is resumed: when to stop, validate, checkpoint, log and show.
RESUMABLE_KEYS = (
    "train.max_steps",
    "train.val_every",
    "train.checkpoint_every",
    "train.log_every",
    "train.progress_bar",
)

# Lightning advertises a cloud logger on every run; keep its other info lines.
logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
    lambda record: not str(record.msg).startswith("💡 Tip")
)


# ``text.encoder: auto`` on a backbone that is no CLIP image tower: the paper's text.
DEFAULT_TEXT = "bank:shared:text/clip-vitb16"


def announce(message: str) -> None:
    """One line on stderr for a choice the user did not make explicitly."""
    print(f"note: {message}", file=sys.stderr, flush=True)


def class_names_of(config: dict) -> list[str]:
    data = config["data"]
    return dataset_classes(data["dataset"], root=data["root"], **data["dataset_kwargs"])


def _same_clip_model(a: str, b: str) -> bool:
    """``RN50/openai`` vs ``RN50/openai``; an ``<arch>`` without a tag (a local checkpoint)
    matches any tag of that architecture."""
    if "/" in a and "/" in b:
        return a == b
    return a.partition("/")[0] == b.partition("/")[0]


def resolve_text_encoder(config: dict, class_names: list[str]) -> dict:
    """``config`` with ``text.encoder: auto`` made concrete, the text of the image side.

    A CLIP backbone (:func:`~clipfuse.backbones.clip_model_of`, e.g. ``resnet50_clip.openai``:
    ``RN50/openai``) gets its own CLIP model's text, as the paper's Table 2 and DenseCLIP pair
    them: the first bank under ``shared:text`` of that model holding every class, else
    ``open_clip:<model>`` (announced: it downloads the weights unless cached). Any other
    backbone gets :data:`DEFAULT_TEXT`. An explicit encoder of another CLIP model than the
    backbone's is refused unless ``text.allow_mismatch`` is true.
    """
    text_cfg = config["text"]
    backbone = config["model"]["backbone"]
    clip_model = clip_model_of(backbone)
    spec = text_cfg["encoder"]
    if spec == "auto":
        names = apply_aliases(class_names, text_cfg["aliases"] or None)
        bank = find_bank(clip_model, names, shared_root() / "text") if clip_model else None
        if bank is not None:
            spec = f"bank:shared:text/{bank.name}"
        elif clip_model is not None:
            spec = f"open_clip:{clip_model}"
            announce(
                f"no text bank of CLIP {clip_model} under {shared_root() / 'text'} holds all "
                f"{len(class_names)} classes: embedding them with {spec} (downloads its weights "
                "unless open_clip's cache has them)"
            )
        else:
            spec = DEFAULT_TEXT
        return {**config, "text": {**text_cfg, "encoder": spec}}
    if clip_model is not None and not text_cfg.get("allow_mismatch", False):
        encoder_class, argument = split_spec(resolve_spec(spec))
        try:
            others = [
                m
                for m in encoder_class.clip_models(argument)
                if not _same_clip_model(m, clip_model)
            ]
        except ClipfuseError:  # an absent bank: text_spec reports it (or falls back)
            others = []
        if others:
            raise ClipfuseError(
                f"text encoder {spec} is CLIP {others[0]}'s but the backbone {backbone} is "
                f"CLIP {clip_model}'s image tower, so image and text features would not be "
                "aligned: use text.encoder=auto, or text.allow_mismatch=true to pair them anyway"
            )
    return config


def text_spec(config: dict, class_names: list[str]) -> str:
    """The text encoder of ``config`` (:func:`resolve_text_encoder`); ``text.fallback``
    (announced) when its ``bank:`` is absent."""
    text_cfg = resolve_text_encoder(config, class_names)["text"]
    spec = resolve_spec(text_cfg["encoder"])
    fallback = text_cfg["fallback"]
    if fallback and spec.startswith("bank:"):
        try:
            resolve_bank_path(spec.removeprefix("bank:"))
        except ClipfuseError:
            announce(
                f"text bank {spec} not found: computing the vocabulary with {fallback} instead"
            )
            return fallback
    return spec


def build_model(
    config: dict,
    class_names: list[str],
    text_embeddings: torch.Tensor | None = None,
    pretrained: bool = True,
) -> Segmentor:
    """The model of ``config``; text embeddings are computed (cached) unless given.

    With ``pretrained`` the one-line notes say where the backbone's weights come from (a
    download unless cached) and how DenseCLIP's attention pool starts.
    """
    model_cfg, text_cfg = config["model"], config["text"]
    method = model_cfg["method"]
    backbone_kwargs = dict(model_cfg["backbone_kwargs"])
    backbone_kwargs["pretrained"] = (
        resolve_path(backbone_kwargs.get("pretrained")) if pretrained else None
    )
    if backbone_kwargs["pretrained"] is True:
        announce(
            f"backbone {model_cfg['backbone']}: timm's pretrained weights "
            "(downloaded from the Hugging Face hub unless cached)"
        )
    head_kwargs = dict(model_cfg["head_kwargs"])
    learnable_context = method == "denseclip" and text_cfg["learnable_context"]
    needs_text = method_uses_text(method) and text_embeddings is None
    spec = text_spec(config, class_names) if needs_text or learnable_context else None
    if needs_text:
        text_embeddings = embed_class_names(
            spec,
            class_names,
            template=text_cfg["template"],
            aliases=text_cfg["aliases"] or None,
        )
    if learnable_context:
        try:
            head_kwargs["prompt_encoder"] = build_prompt_encoder(
                spec,
                class_names,
                n_ctx=text_cfg["learnable_context"],
                aliases=text_cfg["aliases"] or None,
            )
        except ClipfuseError as error:
            announce(f"DenseCLIP's learnable context tokens are off: {error}")
    model = create_model(
        method=method,
        backbone=model_cfg["backbone"],
        num_classes=len(class_names),
        text_embeddings=text_embeddings,
        decoder=model_cfg["decoder"],
        backbone_kwargs=backbone_kwargs,
        head_kwargs=head_kwargs,
        decoder_kwargs=model_cfg["decoder_kwargs"],
    )
    if method == "denseclip" and pretrained:
        backbone = model_cfg["backbone"]
        if not model.head.pool_from_clip:
            announce(f"DenseCLIP's attention pool is randomly initialised ({backbone} has none)")
        elif backbone_kwargs["pretrained"]:
            announce(f"DenseCLIP's attention pool starts from {backbone}'s pretrained CLIP pool")
        else:
            announce(
                f"DenseCLIP's attention pool starts from {backbone}'s CLIP pool, which has "
                "random weights (model.backbone_kwargs.pretrained is off)"
            )
    return model


def cost_model(config: dict, class_names: list[str]) -> Segmentor:
    """The model of ``config`` with random weights, for ``clipfuse flops`` and ``bench``.

    Where the text encoder cannot run here (open_clip weights not downloaded, a bank absent),
    random class embeddings stand in, announced: the cost does not depend on their values.
    Their width is the open_clip architecture's, else 512 (CLIP ViT-B/16's).
    """
    text = None
    if method_uses_text(config["model"]["method"]):
        config = resolve_text_encoder(config, class_names)
        text_cfg = config["text"]
        try:
            spec = text_spec(config, class_names)
            text = embed_class_names(
                spec,
                class_names,
                template=text_cfg["template"],
                aliases=text_cfg["aliases"] or None,
            )
        except ClipfuseError as error:
            encoder_class, argument = split_spec(resolve_spec(text_cfg["encoder"]))
            width = OpenClipEncoder.width(argument) if encoder_class is OpenClipEncoder else 512
            announce(f"{error}; random text embeddings of width {width} stand in")
            text = torch.randn(len(class_names), width, generator=torch.Generator().manual_seed(0))
    return build_model(config, class_names, text_embeddings=text, pretrained=False)


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
    ) -> None:
        train = config["train"]
        super().__init__(
            model,
            class_names,
            optimizer=train["optimizer"],
            lr=train["lr"],
            weight_decay=train["weight_decay"],
            momentum=train["momentum"],
            backbone_lr_mult=train["backbone_lr_mult"],
            head_lr_mult=train.get("head_lr_mult", 1.0),
            max_steps=train["max_steps"],
            warmup_steps=train["warmup_steps"],
            poly_power=train["poly_power"],
            aux_weight=train["aux_weight"],
            aux_temperature=train["aux_temperature"],
            inference=InferenceConfig.from_dict(config["eval"]),
            channels_last=train.get("channels_last", False) is True,
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
        checkpoint[CHECKPOINT_KEY] = {
            "config": self.run_config,
            "class_names": self.class_names,
            "format_version": CHECKPOINT_VERSION,
        }


def _datamodule(config: dict, model: Segmentor) -> SegmentationDataModule:
    data = dict(config["data"])
    return SegmentationDataModule(mean=model.backbone.mean, std=model.backbone.std, **data)


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
        yield


def _launching_process() -> bool:
    """Whether this is the process that started the run (not a DDP worker launched for it):
    only that one locks and checks the run folder."""
    return all(int(os.environ.get(name, 0)) == 0 for name in ("RANK", "LOCAL_RANK", "NODE_RANK"))


def _changed_keys(old: dict, new: dict, where: str = "") -> dict[str, tuple]:
    """Dotted key -> (old, new) for every setting that differs."""
    changed: dict[str, tuple] = {}
    for key in sorted(set(old) | set(new)):
        path = f"{where}.{key}" if where else key
        before, after = old.get(key), new.get(key)
        if isinstance(before, dict) and isinstance(after, dict) and before and after:
            changed.update(_changed_keys(before, after, path))
        elif before != after:
            changed[path] = (before, after)
    return changed


def _run_config(
    config: dict | None, out_dir: Path, resume: bool, overrides: Sequence[str], check: bool
) -> dict:
    """The config to train with. A new run refuses a folder that holds one; a resumed run
    starts from the saved config, applies the changes in ``RESUMABLE_KEYS`` (announced) and
    refuses any other change."""
    saved_path = out_dir / "config.yaml"
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
        return apply_overrides(config, overrides)
    if not saved_path.is_file():
        raise ClipfuseError(
            f"cannot resume: {saved_path} not found (no run was started in {out_dir})"
        )
    # auto precision compared as this machine resolves it (as the saved run did)
    saved = with_resolved_precision(load_config(saved_path))[0]
    wanted = with_resolved_precision(
        apply_overrides(saved if config is None else config, overrides)
    )[0]
    changed = _changed_keys(saved, wanted)
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
    return wanted


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
    config is written to ``out_dir/config.yaml`` before training; checkpoints go to
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
    launching = _launching_process()
    with RunLock(out_dir) if launching else nullcontext():
        if launching:
            for folder in (out_dir, checkpoint_dir):
                remove_partial_files(folder)
        config = _run_config(config, out_dir, resume, overrides, check=launching)
        config, note = with_resolved_precision(config)
        if note and launching:
            announce(f"{note}; set train.precision and train.channels_last to choose")
        return _fit(config, out_dir, last, resume, callbacks)


def _fit(config: dict, out_dir: Path, last: Path, resume: bool, callbacks: list | None) -> dict:
    L.seed_everything(config["seed"], workers=True, verbose=False)
    class_names = class_names_of(config)
    if method_uses_text(config["model"]["method"]):  # config.yaml names the encoder used
        config = resolve_text_encoder(config, class_names)
    model = build_model(config, class_names)
    task = _RunTask(model, class_names, config, report_path=out_dir / "metrics.json")
    datamodule = _datamodule(config, model)
    datamodule.check_files()
    dump_config(config, out_dir / "config.yaml")
    checkpoints = ModelCheckpoint(  # only last.ckpt: a Conv-Former checkpoint with AdamW is ~0.7 GB
        dirpath=last.parent,
        every_n_train_steps=config["train"]["checkpoint_every"],
        save_last=True,
        save_top_k=0,
        enable_version_counter=False,  # the run lock makes last.ckpt this run's own
    )
    trainer = _trainer(config, out_dir, [checkpoints, *(callbacks or [])])
    ckpt_path = None
    if resume and last.exists():
        ckpt_path = str(last)
    elif resume:
        announce(f"no checkpoint in {last.parent} yet: starting from step 0")
    with _expected_warnings():
        trainer.fit(task, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        trainer.save_checkpoint(last, weights_only=False)  # full state, so --resume can continue
        if _reported_step(out_dir) != config["train"]["max_steps"]:  # else fit just validated
            trainer.validate(task, datamodule=datamodule, verbose=False)
    # Read back what rank 0 wrote: with ddp_spawn the workers hold the results, not this process.
    return json.loads((out_dir / "metrics.json").read_text())


def _reported_step(out_dir: Path) -> int | None:
    """The step of the last validation written to ``metrics.json``, if any."""
    path = out_dir / "metrics.json"
    return json.loads(path.read_text()).get("step") if path.is_file() else None


def _report(
    results: dict, class_names: list[str], path: Path | None, step: int, quiet: bool = False
) -> None:
    if not quiet:
        print(f"\nvalidation at step {step}\n{format_table(results, class_names)}", flush=True)
    if path is not None:
        payload = {**results_to_json(results, class_names), "step": step}
        atomic_write_text(path, json.dumps(payload, indent=2))


def load_checkpoint(path: str | Path) -> tuple[dict, list[str], dict]:
    """``(config, class_names, model_state_dict)`` of a clipfuse checkpoint (tensors only)."""
    checkpoint = read_checkpoint(path)
    meta = checkpoint[CHECKPOINT_KEY]
    config = with_defaults(meta["config"])
    if meta.get("format_version", 1) < 2:
        config = with_legacy_head_defaults(config)
    state = {
        k.removeprefix("model."): v
        for k, v in checkpoint["state_dict"].items()
        if k.startswith("model.")
    }
    return config, list(meta["class_names"]), state


def evaluate(
    checkpoint: str | Path,
    overrides: list[str] | None = None,
    json_path: str | Path | None = None,
    quiet: bool = False,
) -> dict:
    """Evaluate a checkpoint on its dataset's ``data.eval_split`` (``val`` unless overridden;
    ``data.*`` / ``eval.*`` overridable)."""
    if json_path is not None:
        prepare_file(json_path, "metrics file")  # before the evaluation, not after it
    config, class_names, state = load_checkpoint(checkpoint)
    if overrides:
        config = apply_overrides(config, overrides)
    dataset_classes = class_names_of(config)
    if dataset_classes != class_names:
        raise ClipfuseError(
            f"checkpoint {checkpoint} was trained on {len(class_names)} classes "
            f"({', '.join(class_names[:5])}, ...) but dataset {config['data']['dataset']!r} has "
            f"{len(dataset_classes)} ({', '.join(dataset_classes[:5])}, ...)"
        )
    text_embeddings = state.get("head.text_embeddings")
    model = build_model(config, class_names, text_embeddings=text_embeddings, pretrained=False)
    load_weights(model, state, f"checkpoint {checkpoint} does not fit its config")
    report_path = Path(json_path) if json_path else None
    task = _RunTask(model, class_names, config, report_path=report_path, quiet=quiet)
    # Autocast comes from eval.precision (in infer_logits), not from how the run was trained.
    single = {"devices": 1, "num_nodes": 1, "strategy": "auto", "precision": "32-true"}
    config = {**config, "train": {**config["train"], **single, "progress_bar": not quiet}}
    log_dir = prepare_dir(
        Path(checkpoint).resolve().parent.parent / "eval", "evaluation log folder"
    )
    trainer = _trainer(config, log_dir)
    with _expected_warnings():
        trainer.validate(task, datamodule=_datamodule(config, model), verbose=False)
    return {
        **results_to_json(task.last_results, class_names),
        "split": config["data"]["eval_split"],
    }
