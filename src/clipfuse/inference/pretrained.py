"""Load, query and share trained models: :func:`load` and :class:`ClipfuseModel`.

:func:`load` reads a pretrained folder (written by :meth:`ClipfuseModel.save_pretrained`, also
pushed to the Hugging Face Hub: :mod:`clipfuse.hub`) or a training checkpoint (``.ckpt``), both
described in :mod:`clipfuse.saved_model`, or a Hub id, through
:func:`clipfuse.build.load_model`, without the dataset, the training config file or the
training engine. :class:`ClipfuseModel` predicts with the trained classes, a subset or
renaming of them, or (language-guided methods) new labels, swapping the head's text
embeddings; :class:`clipfuse.inference.onnx_model.OnnxModel` predicts the same way with an
exported ``.onnx`` file.
"""

import hashlib
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from clipfuse.errors import ClipfuseError, one_line
from clipfuse.inference.labels import (
    LabelChoice,
    LabelsArg,
    dataset_palette,
    label_colour,
    resolve_labels,
)
from clipfuse.inference.predict import (
    BatchRunner,
    ImageInput,
    Prediction,
    as_rgb,
    resolve_device,
)
from clipfuse.models import Segmentor, method_uses_text
from clipfuse.precision import (
    AutocastWeights,
    inference_channels_last,
    inference_dtype,
    inference_path_name,
)
from clipfuse.saved_model import pretrained_config

MAX_LABELS = 255  # label maps are uint8 and 255 is the ignore index


class ClipfuseModel:
    """A trained segmentation model with its vocabulary, preprocessing and colours.

    Build it with :func:`clipfuse.load`. Attributes: ``segmentor`` (the ``nn.Module``),
    ``config`` (the full run config), ``class_names`` (the trained vocabulary), ``palette``
    (K x 3 uint8), ``device``.
    """

    def __init__(
        self,
        segmentor: Segmentor,
        config: dict,
        class_names: Sequence[str],
        palette: np.ndarray | None = None,
        device: str | torch.device | None = "cpu",
        source: str | None = None,
    ) -> None:
        from clipfuse.data import default_palette

        self.segmentor = segmentor.eval()
        self.config = config
        self.class_names = list(class_names)
        palette = default_palette(len(self.class_names)) if palette is None else palette
        self.palette = np.asarray(palette, dtype=np.uint8).reshape(len(self.class_names), 3)
        self.source = source
        self.mean = tuple(float(m) for m in segmentor.backbone.mean)
        self.std = tuple(float(s) for s in segmentor.backbone.std)
        self._runner = BatchRunner(self.mean, self.std, config)
        head = segmentor.head
        self._trained_text = head.text_embeddings.detach().clone() if head is not None else None
        self._lock = threading.RLock()  # open vocabulary swaps the head's text embeddings
        self.device = torch.device("cpu")
        self.to(device)

    # -- description -------------------------------------------------------------------------

    @property
    def method(self) -> str:
        return self.config["model"]["method"]

    @property
    def backbone(self) -> str:
        return self.config["model"]["backbone"]

    @property
    def text(self) -> dict:
        """The text section of the run config: ``encoder`` spec, ``template``, ``aliases``."""
        return self.config["text"]

    @property
    def supports_open_vocab(self) -> bool:
        """Language-guided methods (convformer, denseclip) can predict any embeddable label."""
        return method_uses_text(self.method)

    @property
    def open_vocab_path(self) -> str | None:
        """What ``open_vocab=True`` predicts from: ``"text_classifier"`` (the decoder's pixel
        embeddings against the labels' vectors, ``model.text_classifier``), ``"score_map"``
        (the cosine score map of the last backbone stage), or None for a model without text."""
        if not self.supports_open_vocab:
            return None
        return "score_map" if self.segmentor.text_classifier is None else "text_classifier"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(method={self.method!r}, backbone={self.backbone!r}, "
            f"classes={len(self.class_names)}, device={str(self.device)!r})"
        )

    def fingerprint(self) -> str:
        """SHA-256 of the weights (with the trained text embeddings): equal for a checkpoint and
        its pretrained folder, different for another training or a later checkpoint."""
        state = self.segmentor.state_dict()
        if self._trained_text is not None:  # open vocabulary swaps the buffer while predicting
            state = {**state, "head.text_embeddings": self._trained_text}
        digest = hashlib.sha256()
        for key in sorted(state):
            digest.update(key.encode())
            raw = state[key].detach().cpu().contiguous().reshape(-1).view(torch.uint8)
            digest.update(raw.numpy().tobytes())
        return digest.hexdigest()

    def to(self, device: str | torch.device | None) -> "ClipfuseModel":
        """Move to ``"cpu"``, ``"cuda"`` (``"cuda:N"``) or None / ``"auto"`` (CUDA if any)."""
        self.device = resolve_device(device)
        precision = self._runner.inference.precision
        self._runner.channels_last = inference_channels_last(precision, self.device)
        layout = torch.channels_last if self._runner.channels_last else torch.contiguous_format
        self.segmentor.to(self.device, memory_format=layout)
        dtype = inference_dtype(precision, self.device)
        self._autocast_weights = AutocastWeights(self.segmentor, dtype)
        return self

    @property
    def inference_path(self) -> str:
        """How it predicts, in ``clipfuse bench --paths`` words (``eager-fp32``,
        ``eager-bf16-cl``, ...): the precision and layout ``eval.precision`` chose here."""
        return inference_path_name(self._autocast_weights.dtype, self._runner.channels_last)

    # -- labels ------------------------------------------------------------------------------

    def resolve_labels(self, labels: LabelsArg = None, open_vocab: bool = False) -> LabelChoice:
        """The labels a prediction will use (see :mod:`clipfuse.inference.labels`); raises the
        same one-line errors as :meth:`predict` without running the network."""
        if open_vocab and not self.supports_open_vocab:
            raise ClipfuseError(
                f"open vocabulary needs a language-guided model (convformer or denseclip); "
                f"this model is {self.method!r}, which has no text: choose among its classes "
                f"({', '.join(self.class_names)})"
            )
        hint = ""
        if self.supports_open_vocab:
            hint = (
                f" (open_vocab=True / --open-vocab embeds new labels with {self.text['encoder']})"
            )
        choice = resolve_labels(
            labels, self.class_names, self.text["aliases"], open_vocab, open_vocab_hint=hint
        )
        if len(choice.names) > MAX_LABELS:
            raise ClipfuseError(f"labels: at most {MAX_LABELS} labels, got {len(choice.names)}")
        return choice

    def embed_labels(self, choice: LabelChoice) -> torch.Tensor:
        """K' x Ct text embeddings of ``choice``: trained rows as stored in the weights, new
        labels embedded with the model's text encoder (``text.encoder``, cached on disk) at
        the trained width (an encoder that gives another is a one-line error)."""
        from clipfuse.config import resolve_spec
        from clipfuse.text import embed_class_names

        if self._trained_text is None:
            raise ClipfuseError(f"method {self.method!r} has no text embeddings")
        rows: list[torch.Tensor | None] = [
            self._trained_text[k] if k is not None else None for k in choice.indices
        ]
        new = choice.new_queries
        if new:
            spec = resolve_spec(self.text["encoder"])
            try:
                embedded = embed_class_names(
                    spec,
                    new,
                    template=self.text["template"],
                    aliases=self.text["aliases"] or None,
                    width=self._trained_text.shape[1],  # a cached matrix of another is redone
                )
            except ClipfuseError as error:
                raise ClipfuseError(
                    f"open vocabulary: cannot embed {', '.join(map(repr, new))} with the model's "
                    f"text encoder {self.text['encoder']}: {one_line(error)}"
                ) from error
            except Exception as error:  # a live encoder that cannot load (offline, missing)
                raise ClipfuseError(
                    f"open vocabulary: the text encoder {self.text['encoder']} failed: "
                    f"{one_line(error)}"
                ) from error
            fresh = iter(embedded)
            rows = [row if row is not None else next(fresh) for row in rows]
        return torch.stack([row.float() for row in rows])

    def label_palette(self, choice: LabelChoice) -> np.ndarray:
        """K' x 3 uint8 colours of ``choice``: trained classes keep theirs, new labels get
        :func:`label_colour`."""
        return np.stack(
            [
                self.palette[k] if k is not None else label_colour(query)
                for k, query in zip(choice.indices, choice.queries, strict=True)
            ]
        )

    # -- prediction --------------------------------------------------------------------------

    def _score_map_logits(self, images: torch.Tensor) -> torch.Tensor:
        features = self.segmentor.backbone(images)
        _, score_map = self.segmentor.head(features[-1])
        temperature = float(self.config["train"]["aux_temperature"])
        return F.interpolate(
            score_map / temperature, size=images.shape[-2:], mode="bilinear", align_corners=False
        )

    def predict(
        self,
        images: ImageInput | Sequence[ImageInput],
        labels: LabelsArg = None,
        open_vocab: bool = False,
        batch_size: int = 4,
        scores: bool = True,
    ) -> Prediction | list[Prediction]:
        """Segment one image (a path, PIL image or uint8 array) or a list of them (batched).

        Args:
            images: one image, or a list / tuple of images (then a list of results).
            labels: None for the trained vocabulary; else a subset / renaming of it:
                ``"road, car, person"``, ``["Road=street", "Car"]``, ``{"Road": "street"}``
                (names match case-insensitively, also through the text aliases of training).
                The prediction is the argmax over the chosen classes' logits.
            open_vocab: labels outside the trained vocabulary work (embedded with the model's
                text encoder): predicted through the decoder's text classifier when the model
                has one (``model.text_classifier``), else from the cosine score map S, usually
                less accurate than the decoder. Language-guided methods only.
            batch_size: images per forward pass (images of equal size are batched).
            scores: also return the K x H x W probabilities (``Prediction.scores``).
        """
        single = not isinstance(images, list | tuple)
        arrays = [as_rgb(image) for image in ([images] if single else images)]
        choice = self.resolve_labels(labels, open_vocab)
        palette = self.label_palette(choice)
        with self._lock, self._autocast_weights.applied():
            if open_vocab:
                results = self._predict_score_map(arrays, choice, batch_size, scores)
            else:
                results = self._predict_decoder(arrays, choice, batch_size, scores)
        predictions = [
            Prediction(
                label_map=label_map,
                class_names=list(choice.names),
                scores=probabilities,
                palette=palette,
                image=image,
                mode=self.open_vocab_path if open_vocab else "decoder",
            )
            for image, (label_map, probabilities) in zip(arrays, results, strict=True)
        ]
        return predictions[0] if single else predictions

    def _predict_decoder(self, arrays, choice, batch_size, scores):
        indices = list(choice.indices)
        if indices == list(range(len(self.class_names))):
            logits_fn = lambda x: self.segmentor(x)["logits"]  # noqa: E731
        else:
            index = torch.tensor(indices, device=self.device)
            logits_fn = lambda x: self.segmentor(x)["logits"][:, index]  # noqa: E731
        return list(
            self._runner.run(logits_fn, arrays, len(indices), self.device, batch_size, scores)
        )

    def _predict_score_map(self, arrays, choice, batch_size, scores):
        text = self.embed_labels(choice)
        if self.segmentor.text_classifier is not None:
            text = text.to(self.device)
            logits_fn = lambda x: self.segmentor(x, text)["logits"]  # noqa: E731
            return list(
                self._runner.run(
                    logits_fn, arrays, len(choice.names), self.device, batch_size, scores
                )
            )
        head = self.segmentor.head
        head.set_text_embeddings(text)
        try:
            return list(
                self._runner.run(
                    self._score_map_logits,
                    arrays,
                    len(choice.names),
                    self.device,
                    batch_size,
                    scores,
                )
            )
        finally:
            head.set_text_embeddings(self._trained_text)

    # -- saving ------------------------------------------------------------------------------

    def save_pretrained(self, directory: str | os.PathLike, **options) -> Path:
        """Write the model as a pretrained folder in ``directory``: ``model.safetensors``,
        ``config.json`` and a model card ``README.md`` (metrics, dataset, classes, config, the
        training command), one atomic save; :func:`clipfuse.load` reads it back on any machine.

        ``options`` (:func:`clipfuse.hub.save_folder`): ``push_to_hub=True`` uploads the three
        files to the Hugging Face Hub repository ``repo_id`` (created if absent; ``private``,
        ``token``, ``commit_message``); ``metrics`` (``{"mIoU": 71.3}`` or the path of a
        ``metrics.json``) and ``dataset`` (default: the config's) go into the card."""
        from clipfuse.hub import save_folder

        state = {
            key: value.detach().to("cpu").contiguous().clone()
            for key, value in self.segmentor.state_dict().items()
        }
        if self._trained_text is not None:
            state["head.text_embeddings"] = self._trained_text.cpu().contiguous().clone()
        meta = pretrained_config(self.config, self.class_names, self.mean, self.std, self.palette)
        return save_folder(directory, state, meta, **options)


def save_segmentor(segmentor: Segmentor, directory: str | os.PathLike, **options) -> Path:
    """:meth:`ClipfuseModel.save_pretrained` of a ``Segmentor`` built from a run config (it
    carries ``config`` and ``class_names``), left as it is (device, mode, weights); colours:
    the training dataset's when it is on this machine, else the default palette."""
    from clipfuse.data import default_palette
    from clipfuse.hub import save_folder

    config, class_names = segmentor.config, segmentor.class_names
    if config is None or class_names is None:
        raise ClipfuseError(
            "save_pretrained needs the model's run config and class names (model.config, "
            "model.class_names), which a model built from a config carries "
            "(clipfuse.create_model, clipfuse.build.create_model_from_config); this one has none"
        )
    palette = dataset_palette(config, class_names)
    if palette is None:
        palette = default_palette(len(class_names))
    state = {
        key: value.detach().to("cpu").contiguous().clone()
        for key, value in segmentor.state_dict().items()
    }
    backbone = segmentor.backbone
    mean, std = tuple(map(float, backbone.mean)), tuple(map(float, backbone.std))
    meta = pretrained_config(config, class_names, mean, std, np.asarray(palette, dtype=np.uint8))
    return save_folder(directory, state, meta, **options)


# -- loading -----------------------------------------------------------------------------------


def load(
    path: str | os.PathLike,
    device: str | torch.device | None = None,
    revision: str | None = None,
) -> ClipfuseModel:
    """A trained model from a pretrained folder (or its ``config.json``), a training
    checkpoint (``.ckpt``) or a Hugging Face Hub id (``"owner/name"``, at ``revision``:
    downloaded once into the hub cache, :func:`clipfuse.hub.download`), on ``device``
    (``"cpu"``, ``"cuda"``; default: CUDA if available); or an ``.onnx`` file from ``clipfuse
    export`` (fp32 or int8: :class:`~clipfuse.inference.onnx_model.OnnxModel`, onnxruntime on
    the CPU).

    Raises a one-line :class:`~clipfuse.errors.ClipfuseError` for a missing path or Hub
    repository, no network, an unknown format version, a missing file, weights that do not fit
    the config, or a foreign file.
    """
    from clipfuse.build import load_model

    if Path(path).suffix.lower() == ".onnx":
        from clipfuse.inference.onnx_model import OnnxModel

        return OnnxModel(path, device)
    loaded = load_model(path, revision=revision)
    meta = loaded.pretrained_meta
    if meta is not None:
        palette = meta.get("palette")
    else:
        palette = dataset_palette(loaded.config, loaded.class_names)
    return ClipfuseModel(
        loaded.segmentor,
        loaded.config,
        loaded.class_names,
        palette,
        device,
        source=str(loaded.source),
    )
