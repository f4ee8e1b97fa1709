"""The schema of a run config: every key with its default and what it accepts (a pydantic
model per section), checked by :func:`validate_config` before anything is built or written.

Scalars are strict: an integer key refuses ``1.5``, ``true`` and ``"3"``; a number key takes
an integer but refuses a string, ``.nan`` and ``.inf``. Choices (method, decoder, dataset)
come from their registries, and the free-form ``*_kwargs`` mappings may only name keyword
arguments of what they build (the decoder's, language head's, backbone's or dataset's class).
A bad value is one error naming the key, the value and what is allowed::

    config key train.max_steps is 'abc': expected a positive integer

The defaults here are a config's only ones. The library functions and classes a section feeds
(:func:`clipfuse.losses.segmentation_loss`, :func:`clipfuse.engine.create_optimizer`,
:class:`clipfuse.evaluation.InferenceConfig`, ...) keep the same defaults in their signatures,
for a caller without a config; tests/test_defaults.py holds each equal to the key it mirrors.
"""

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from clipfuse.config_errors import EXPECTED, MESSAGE, describe_error
from clipfuse.errors import ClipfuseError

PositiveInt = Annotated[StrictInt, Field(gt=0)]
NonNegativeInt = Annotated[StrictInt, Field(ge=0)]
PositiveNumber = Annotated[float, Field(gt=0)]
NonNegativeNumber = Annotated[float, Field(ge=0)]
Name = Annotated[StrictStr, Field(min_length=1)]
Pair = Annotated[Sequence[PositiveInt], Field(min_length=2, max_length=2)]

TRAIN_PRECISIONS = ("auto", "32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true")
EVAL_PRECISIONS = ("auto", "32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true")
PAIR = "[height, width], two positive integers"
POSITIVE = "a positive number"
NON_NEGATIVE = "a number >= 0"


def _key(default: Any, expected: str) -> Any:
    """A config key: its default and what it accepts, as the error message says it."""
    return Field(default=default, description=expected)


def _expected(text: str) -> PydanticCustomError:
    return PydanticCustomError(EXPECTED, "{text}", {"text": text})


def _message(text: str) -> PydanticCustomError:
    return PydanticCustomError(MESSAGE, "{text}", {"text": text})


def _one_of(value: Any, names: Sequence[str]) -> str:
    """``value`` when it is one of ``names`` (compared as given), else an error listing them."""
    if not isinstance(value, str) or value not in names:
        raise _expected(f"one of {', '.join(names)}")
    return value


def _keyword_arguments(builds: Callable, supplied: Sequence[str]) -> list[str] | None:
    """The keyword arguments (those with a default) a config may give ``builds``, less those
    its builder ``supplied`` itself; None when it takes ``**kwargs``."""
    parameters = inspect.signature(builds).parameters.values()
    if any(parameter.kind is parameter.VAR_KEYWORD for parameter in parameters):
        return None
    return [
        parameter.name
        for parameter in parameters
        if parameter.default is not parameter.empty and parameter.name not in supplied
    ]


def _check_arguments(
    key: str, given: Mapping, builds: Callable, what: str, supplied: Sequence[str] = ()
) -> None:
    """Every name in ``given`` (the mapping of config key ``key``) is an argument of ``builds``
    (``what``, in the message)."""
    allowed = _keyword_arguments(builds, supplied)
    unknown = [name for name in given if allowed is not None and name not in allowed]
    if unknown:
        takes = f"takes {', '.join(allowed)}" if allowed else "takes no options"
        raise _message(f"config key {key}.{unknown[0]} is unknown: {what} {takes}")


def _check_encoder_spec(spec: Any) -> str:
    """A well-formed text-encoder spec (:func:`clipfuse.text.registry.check_spec`)."""
    from clipfuse.text.registry import check_spec

    try:
        return check_spec(spec)
    except ClipfuseError as error:
        raise _expected(str(error).partition(": expected ")[2]) from None


class _Section(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)


class ModelSection(_Section):
    """The arguments of :func:`clipfuse.models.create_model`."""

    method: str = _key("plain", "a method")
    backbone: Name = _key("mobilenetv2_100", "a timm model name")
    decoder: str = _key("fpn", "a decoder")
    backbone_kwargs: dict[str, Any] = _key({}, "a mapping of the backbone's options")
    head_kwargs: dict[str, Any] = _key({}, "a mapping of the language head's options")
    decoder_kwargs: dict[str, Any] = _key({}, "a mapping of the decoder's options")
    text_classifier: StrictBool = _key(
        False, "true or false (LSeg-style: the decoder's classifier as text similarities)"
    )

    @field_validator("method", mode="before")
    @classmethod
    def _known_method(cls, value: Any) -> str:
        from clipfuse.models import METHODS

        return _one_of(value, list(METHODS))

    @field_validator("decoder", mode="before")
    @classmethod
    def _known_decoder(cls, value: Any) -> str:
        from clipfuse.decoders import DECODERS

        return _one_of(value, list(DECODERS))

    @model_validator(mode="after")
    def _known_options(self) -> "ModelSection":
        from clipfuse.backbones import TimmBackbone
        from clipfuse.decoders import DECODERS
        from clipfuse.models import METHODS

        head = METHODS[self.method][0]
        if head is None and self.head_kwargs:
            raise _message(
                f"config key model.head_kwargs.{next(iter(self.head_kwargs))} is unknown: method "
                f"{self.method} has no language head, so model.head_kwargs must be empty"
            )
        if head is not None:
            what = f"method {self.method}'s head ({head.__name__})"
            _check_arguments("model.head_kwargs", self.head_kwargs, head, what)
        decoder = DECODERS[self.decoder]
        what = f"decoder {self.decoder} ({decoder.__name__})"
        _check_arguments("model.decoder_kwargs", self.decoder_kwargs, decoder, what)
        what = "the backbone (TimmBackbone)"
        _check_arguments("model.backbone_kwargs", self.backbone_kwargs, TimmBackbone, what)
        return self


Template = Annotated[StrictStr, Field(pattern=r"^[^{}]*\{\}[^{}]*$")]


class TextSection(_Section):
    """How the class names are embedded (:mod:`clipfuse.text.resolve`)."""

    encoder: str = _key("auto", "auto or a text-encoder spec")
    allow_mismatch: StrictBool = _key(False, "true or false")
    template: Template | Annotated[list[Template], Field(min_length=1)] = _key(
        "a photo of a {}.", "a prompt with one {} for the class name, or a list of them"
    )
    aliases: dict[StrictStr, StrictStr] = _key({}, "a mapping of class name -> text to embed")
    fallback: str | None = _key(None, "null or a text-encoder spec")
    learnable_context: NonNegativeInt = _key(0, "an integer >= 0 (DenseCLIP's context tokens)")
    # text.negatives: names never a target, extra rows of the text classifier (text.negatives)
    negatives: Name | None = _key(None, "null or a text bank file (.npy) of negative names")
    negatives_max_cosine: Annotated[float, Field(gt=-1, le=1)] = _key(0.85, "a number in (-1, 1]")
    negatives_per_step: PositiveInt = _key(64, "a positive integer (names drawn per step)")
    shuffle: StrictBool | NonNegativeInt = _key(
        False, "false, true or an integer >= 0 (which draw of the shuffle)"
    )

    @field_validator("encoder", mode="before")
    @classmethod
    def _known_encoder(cls, value: Any) -> str:
        return value if value == "auto" else _check_encoder_spec(value)

    @field_validator("fallback", mode="before")
    @classmethod
    def _known_fallback(cls, value: Any) -> str | None:
        return None if value is None else _check_encoder_spec(value)


class DataSection(_Section):
    """The arguments of :class:`clipfuse.engine.SegmentationDataModule`."""

    dataset: str = _key("camvid", "a dataset")
    root: Name | None = _key(None, "null or the folder of the dataset")
    dataset_kwargs: dict[str, Any] = _key({}, "a mapping of the dataset's options")
    crop_size: Pair = _key([512, 512], PAIR)
    base_size: PositiveInt | None = _key(None, "null or a positive integer (short side)")
    scale_range: Annotated[Sequence[PositiveNumber], Field(min_length=2, max_length=2)] = _key(
        [0.5, 2.0], "[low, high], positive numbers with low <= high"
    )
    cat_max_ratio: Annotated[float, Field(gt=0, le=1)] = _key(0.75, "a number in (0, 1]")
    val_size: PositiveInt | Pair | None = _key(
        None, f"null, a positive integer (short side) or {PAIR}"
    )
    batch_size: PositiveInt = _key(8, "a positive integer")
    val_batch_size: PositiveInt = _key(1, "a positive integer")
    num_workers: NonNegativeInt = _key(2, "an integer >= 0 (0: load in the main process)")
    eval_split: Literal["train", "val", "test"] = _key("val", "one of train, val, test")
    train_images: PositiveInt | None = _key(
        None, "null or a positive integer (train on a fixed subset of that many images)"
    )

    @field_validator("dataset", mode="before")
    @classmethod
    def _known_dataset(cls, value: Any) -> str:
        from clipfuse.data import DATASETS

        _one_of(value.lower() if isinstance(value, str) else value, list(DATASETS))
        return value

    @field_validator("scale_range", mode="after")
    @classmethod
    def _ordered(cls, value: Sequence[float]) -> Sequence[float]:
        if value[0] > value[1]:
            raise _expected("[low, high], positive numbers with low <= high")
        return value

    @model_validator(mode="after")
    def _known_options(self) -> "DataSection":
        from clipfuse.data.registry import dataset_class

        cls = dataset_class(self.dataset)
        _check_arguments(
            "data.dataset_kwargs",
            self.dataset_kwargs,
            cls,
            f"dataset {self.dataset} ({cls.__name__})",
            supplied=("split", "transform"),
        )
        return self


class TrainSection(_Section):
    """How a run trains: split by hand (:mod:`clipfuse.engine.run`) between
    :class:`clipfuse.engine.SegmentationTask`, Lightning's Trainer and its callbacks."""

    max_steps: PositiveInt = _key(1000, "a positive integer")
    optimizer: Literal["sgd", "adamw"] = _key("sgd", "sgd or adamw")
    lr: PositiveNumber = _key(0.01, POSITIVE)
    weight_decay: NonNegativeNumber = _key(5e-4, NON_NEGATIVE)
    momentum: Annotated[float, Field(ge=0, lt=1)] = _key(0.9, "a number in [0, 1)")
    backbone_lr_mult: NonNegativeNumber = _key(0.1, NON_NEGATIVE)
    head_lr_mult: NonNegativeNumber = _key(1.0, NON_NEGATIVE)
    warmup_steps: NonNegativeInt = _key(0, "an integer >= 0")
    poly_power: NonNegativeNumber = _key(0.9, NON_NEGATIVE)
    aux_weight: NonNegativeNumber = _key(0.4, NON_NEGATIVE)
    aux_temperature: PositiveNumber = _key(0.07, POSITIVE)
    loss: Literal["ce", "ohem"] = _key("ce", "ce or ohem")
    ohem_thresh: Annotated[float, Field(gt=0, le=1)] = _key(0.7, "a number in (0, 1]")
    ohem_min_kept: NonNegativeInt = _key(100000, "an integer >= 0 (pixels per image)")
    # balanced: a list before training (clipfuse.engine.class_weight; config.yaml records it)
    # of positive numbers: a batch of only zero-weighted pixels would have a loss of 0 / 0
    class_weight: (
        Literal["balanced"] | Annotated[list[PositiveNumber], Field(min_length=1)] | None
    ) = _key(None, "null, balanced, or a list of positive numbers (one per class)")
    # fine-tuning: the weights of a trained model (.ckpt or pretrained folder), class-aware
    init_from: Name | None = _key(None, "null or a trained model (.ckpt or pretrained folder)")
    init_classes: (
        Annotated[list[Annotated[StrictStr, Field(pattern=r".+=.+")]], Field(min_length=1)] | None
    ) = _key(None, "null or a list of SOURCE_CLASS=CLASS pairs (besides classes of the same name)")
    init_text: Literal["names", "source"] = _key(
        "names", "names or source (the text vectors of classes started from a source class)"
    )
    # EMA of the weights (Lightning's EMAWeightAveraging): validation and the saved model use it
    ema_decay: Annotated[float, Field(gt=0, lt=1)] | None = _key(
        None, "null (off) or a number in (0, 1), e.g. 0.999"
    )
    # auto: on a CPU what its probe measured fastest (clipfuse.cpu_probe); on a GPU bf16-mixed,
    # or 16-mixed without bf16 (clipfuse.precision)
    precision: Literal[TRAIN_PRECISIONS] = _key("auto", f"one of {', '.join(TRAIN_PRECISIONS)}")
    channels_last: Literal["auto"] | StrictBool = _key("auto", "true, false or auto")
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps", "tpu"] = _key(
        "auto", "one of auto, cpu, gpu, cuda, mps, tpu"
    )
    devices: PositiveInt | Literal[-1] | Name | list[NonNegativeInt] = _key(
        1, "a positive integer, -1 (all), auto, or a list of device indices"
    )
    num_nodes: PositiveInt = _key(1, "a positive integer")
    strategy: Name = _key("auto", "a Lightning strategy name (auto, ddp, ddp_spawn, ...)")
    val_every: PositiveInt = _key(1000, "a positive integer (steps)")
    checkpoint_every: PositiveInt = _key(200, "a positive integer (steps)")
    log_every: PositiveInt = _key(10, "a positive integer (steps)")
    progress_bar: StrictBool = _key(True, "true or false")
    # auto: one per usable core, fewer while other work keeps some busy (clipfuse.threads)
    threads: Literal["auto"] | PositiveInt = _key("auto", "auto or a positive integer")

    @model_validator(mode="after")
    def _pairs_need_a_source(self) -> "TrainSection":
        if self.init_classes is not None and self.init_from is None:
            raise _message(
                "config key train.init_classes is set: expected train.init_from too (the "
                "trained model whose classes the pairs name)"
            )
        return self


class EvalSection(_Section):
    """The fields of :class:`clipfuse.evaluation.InferenceConfig`."""

    mode: Literal["whole", "slide"] = _key("whole", "whole or slide")
    crop_size: Pair | None = _key(None, f"null or {PAIR}")
    stride: Pair | None = _key(None, f"null or {PAIR}")
    flip: StrictBool = _key(False, "true or false")
    scales: Annotated[Sequence[PositiveNumber], Field(min_length=1)] = _key(
        [1.0], "a non-empty list of positive numbers"
    )
    precision: Literal[EVAL_PRECISIONS] = _key("auto", f"one of {', '.join(EVAL_PRECISIONS)}")

    @model_validator(mode="after")
    def _window(self) -> "EvalSection":
        if self.mode != "slide":
            return self
        if self.crop_size is None or self.stride is None:
            raise _message(
                "config key eval.mode is 'slide': expected eval.crop_size and eval.stride too "
                "([height, width] each)"
            )
        if self.stride[0] > self.crop_size[0] or self.stride[1] > self.crop_size[1]:
            raise _message(
                f"config key eval.stride is {list(self.stride)}: expected at most eval.crop_size "
                f"{list(self.crop_size)}"
            )
        return self


class RunConfig(_Section):
    """A whole run config (see :mod:`clipfuse.config`)."""

    seed: Annotated[StrictInt, Field(ge=0, le=2**32 - 1)] = _key(
        0, "an integer from 0 to 4294967295"
    )
    model: ModelSection = Field(default_factory=ModelSection)
    text: TextSection = Field(default_factory=TextSection)
    data: DataSection = Field(default_factory=DataSection)
    train: TrainSection = Field(default_factory=TrainSection)
    eval: EvalSection = Field(default_factory=EvalSection)

    @model_validator(mode="after")
    def _negatives_need_the_text_classifier(self) -> "RunConfig":
        if self.text.negatives is not None and not self.model.text_classifier:
            raise _message(
                "config key text.negatives is set: expected model.text_classifier: true too "
                "(the negative names are extra rows of the text classifier's logits)"
            )
        return self


def validate_config(config: Mapping) -> None:
    """Check every value of a complete ``config``; a :class:`ClipfuseError` names the first
    bad key, its value and what it accepts (and the other bad keys, if any)."""
    try:
        RunConfig.model_validate(config)
    except ValidationError as error:
        described: dict[str, str] = {}
        for item in error.errors():
            key, message = describe_error(item, config, RunConfig)
            described.setdefault(key, message)
        first, *others = described
        also = f" (also bad: {', '.join(others)})" if others else ""
        raise ClipfuseError(f"{described[first]}{also}") from None


def default_config() -> dict[str, Any]:
    """Every key with its default value."""
    return RunConfig().model_dump()
