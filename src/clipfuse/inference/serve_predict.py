"""What ``POST /api/predict`` does with one upload: decode it within the limits, segment it with
:meth:`ClipfuseModel.predict`, and answer with the label map as a PNG (palette mode: pixel value
k is class k, coloured with the class's colour), the class names, colours, per-class areas, the
image size and where the time went."""

import base64
import io
import time
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from clipfuse.errors import ClipfuseError, one_line
from clipfuse.inference.predict import pil_to_rgb
from clipfuse.inference.pretrained import ClipfuseModel

DEFAULT_MAX_BYTES = 20 * 1024 * 1024
DEFAULT_MAX_PIXELS = 4096 * 4096


class UploadError(Exception):
    """A bad upload: the message is shown on the page."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def decode_upload(data: bytes, max_pixels: int, max_bytes: int) -> Image.Image:
    """The uploaded bytes as a loaded PIL image, or an :class:`UploadError` with a message
    a person can act on. The size is checked from the header, before the pixels are decoded."""
    if not data:
        raise UploadError("the upload is empty: choose an image file", 422)
    if len(data) > max_bytes:  # the read stops at max_bytes + 1: the true size is unknown
        raise UploadError(f"the file is larger than the limit of {size_text(max_bytes)}", 413)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise UploadError(
                    f"the image is {width} x {height} pixels: the limit is {max_pixels:,} pixels "
                    "(resize it and try again)",
                    413,
                )
            image.load()
    except UploadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UploadError(
            f"the image is too large to decode safely: the limit is {max_pixels:,} pixels", 413
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError):
        raise UploadError(
            "the file is not an image this demo can read: upload a PNG, JPEG, BMP, TIFF or "
            "WebP image",
            422,
        ) from None
    return image


def size_text(n: int) -> str:
    """``21.0 MB (20,971,520 bytes)``: the bytes tell apart sizes that round alike."""
    return f"{n / 1e6:.1f} MB ({n:,} bytes)"


def distinct_colours(palette: np.ndarray) -> list[list[int]]:
    """``palette`` (K x 3) with each repeat of an earlier colour moved to the next free blue
    value, so that a colour names one class (the page reads the class under the pointer from
    the label PNG's colours)."""
    used: set[tuple[int, int, int]] = set()
    colours = []
    for red, green, blue in np.asarray(palette, dtype=np.uint8).tolist():
        while (red, green, blue) in used:
            blue = (blue + 1) % 256
        used.add((red, green, blue))
        colours.append([red, green, blue])
    return colours


def label_png(label_map: np.ndarray, colours: list[list[int]]) -> str:
    """The H x W uint8 label map as a palette PNG data URL: pixel value k is class k, shown
    in ``colours[k]`` (``np.asarray(Image.open(...))`` gives the class indices back)."""
    image = Image.fromarray(label_map, mode="L")
    image.putpalette([value for colour in colours for value in colour])  # "L" -> "P"
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def predict_upload(
    model: ClipfuseModel,
    data: bytes,
    labels: str = "",
    open_vocab: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
    queued_at: float | None = None,
) -> dict:
    """The JSON answer to one upload (:class:`~clipfuse.inference.serve_schema.Prediction`;
    raises :class:`UploadError`). ``queued_at`` (``time.perf_counter()`` when the request was
    admitted) gives ``timing.wait_ms``, the time spent behind other requests."""
    started = time.perf_counter()
    try:
        image = pil_to_rgb(decode_upload(data, max_pixels, max_bytes), "the uploaded image")
    except ClipfuseError as error:
        raise UploadError(one_line(error), 422) from None
    decoded = time.perf_counter()
    try:
        result = model.predict(image, labels.strip() or None, open_vocab=open_vocab, scores=False)
    except ClipfuseError as error:
        raise UploadError(one_line(error), 400) from None
    predicted = time.perf_counter()
    colours = distinct_colours(result.palette)
    counts = np.bincount(result.label_map.ravel(), minlength=len(result.class_names))
    answer = {
        "label_map": label_png(result.label_map, colours),
        "width": int(image.shape[1]),
        "height": int(image.shape[0]),
        "mode": result.mode,
        "class_names": result.class_names,
        "palette": colours,
        "areas": (counts / max(result.label_map.size, 1)).tolist(),
    }
    milliseconds = lambda start, end: round(1000 * (end - start), 2)  # noqa: E731
    answer["timing"] = {
        "wait_ms": milliseconds(queued_at, started) if queued_at is not None else 0.0,
        "preprocess_ms": milliseconds(started, decoded),
        "model_ms": milliseconds(decoded, predicted),
        "postprocess_ms": milliseconds(predicted, time.perf_counter()),
    }
    return answer
