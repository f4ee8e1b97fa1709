"""``clipfuse serve``: a local web page to try a trained model (FastAPI + one HTML page).

Routes: ``GET /`` the page; ``GET /api/info`` the model's vocabulary and limits;
``POST /api/predict`` (multipart: ``image`` file, optional ``labels`` text and ``open_vocab``
flag) -> JSON with the overlay as a PNG data URL and the per-class areas, or ``{"error": ...}``
with status 400 (bad labels), 413 (too large) or 422 (not an image). ``GET /health`` -> ok.
"""

import asyncio
import base64
import errno
import io
import socket
import warnings
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

from PIL import Image, UnidentifiedImageError

from clipfuse.errors import ClipfuseError, one_line
from clipfuse.extras import require
from clipfuse.inference.predict import pil_to_rgb
from clipfuse.inference.pretrained import ClipfuseModel
from clipfuse.inference.serve_page import demo_page

DEFAULT_MAX_BYTES = 20 * 1024 * 1024
DEFAULT_MAX_PIXELS = 4096 * 4096
FORM_OVERHEAD = 64 * 1024
"""Bytes a request may hold beyond ``max_bytes``: the multipart headers and the other fields."""


class BodyTooLarge(Exception):
    """Raised by the request stream once more than ``max_bytes + FORM_OVERHEAD`` have arrived."""


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
        raise UploadError(f"the file is larger than the limit of {_size(max_bytes)}", 413)
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


def _size(n: int) -> str:
    """``21.0 MB (20,971,520 bytes)``: the bytes tell apart sizes that round alike."""
    return f"{n / 1e6:.1f} MB ({n:,} bytes)"


def _png_data_url(image: Image.Image) -> str:
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
) -> dict:
    """The JSON answer to one upload (raises :class:`UploadError`)."""
    try:
        image = pil_to_rgb(decode_upload(data, max_pixels, max_bytes), "the uploaded image")
    except ClipfuseError as error:
        raise UploadError(one_line(error), 422) from None
    try:
        result = model.predict(image, labels.strip() or None, open_vocab=open_vocab, scores=False)
    except ClipfuseError as error:
        raise UploadError(one_line(error), 400) from None
    areas = result.areas
    rows = [
        {
            "name": name,
            "colour": "#{:02x}{:02x}{:02x}".format(*(int(c) for c in result.palette[k])),
            "area": areas[name],
        }
        for k, name in enumerate(result.class_names)
    ]
    rows.sort(key=lambda row: -row["area"])
    return {
        "overlay": _png_data_url(result.overlay),
        "width": int(image.shape[1]),
        "height": int(image.shape[0]),
        "mode": result.mode,
        "classes": rows,
    }


def create_app(
    model: ClipfuseModel,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
):
    """The FastAPI application serving ``model``."""
    require("fastapi", "clipfuse serve")
    require("python_multipart", "clipfuse serve (uploads)")
    from fastapi import FastAPI, Request
    from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
    from starlette.datastructures import UploadFile

    # One thread for every upload: each thread that allocates gets its own glibc heap, which
    # keeps what a request freed, so on a pool's threads the server grew per thread used
    # (docs/robustness.md, "Memory of predict and serve"). The model predicts one at a time.
    predictions = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clipfuse-predict")
    app = FastAPI(title="clipfuse", docs_url=None, redoc_url=None)
    info = {
        "method": model.method,
        "backbone": model.backbone,
        "class_names": model.class_names,
        "open_vocab": model.supports_open_vocab,
        "text_encoder": model.text["encoder"] if model.supports_open_vocab else None,
        "max_bytes": max_bytes,
        "max_pixels": max_pixels,
    }
    page = demo_page(info)

    def error(message: str, status: int) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return page

    @app.get("/health", response_class=PlainTextResponse)
    def health() -> str:
        return "ok"

    @app.get("/api/info")
    def api_info() -> dict:
        return info

    @app.post("/api/predict")
    async def api_predict(request: Request):
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > max_bytes + FORM_OVERHEAD:
            return error(
                f"the upload is {_size(int(length))}: the limit is {_size(max_bytes)}", 413
            )
        try:  # a chunked body (no Content-Length) is counted as it arrives
            limited = Request(request.scope, _limited_receive(request.receive, max_bytes))
            form = await limited.form(max_files=1, max_fields=8)
        except BodyTooLarge:
            return error(f"the upload is larger than the limit of {_size(max_bytes)}", 413)
        except Exception:  # malformed multipart body
            return error("the request is not a valid form upload (multipart/form-data)", 400)
        try:
            upload = form.get("image")
            if not isinstance(upload, UploadFile):
                return error("no image in the upload: choose an image file", 422)
            data = await upload.read(max_bytes + 1)
            labels = form.get("labels") or ""
            open_vocab = str(form.get("open_vocab") or "").lower() in ("1", "true", "on", "yes")
            if not isinstance(labels, str):
                return error("labels must be text", 400)
            answer = await asyncio.get_running_loop().run_in_executor(
                predictions, predict_upload, model, data, labels, open_vocab, max_pixels, max_bytes
            )
            return JSONResponse(answer)
        except UploadError as problem:
            return error(str(problem), problem.status)
        except Exception as problem:  # keep serving, say what went wrong
            return error(f"internal error: {type(problem).__name__}: {problem}", 500)
        finally:
            await form.close()

    return app


Receive = Callable[[], Awaitable[dict]]


def _limited_receive(receive: Receive, max_bytes: int) -> Receive:
    """``receive`` (an ASGI callable) raising :class:`BodyTooLarge` as soon as the body passes
    ``max_bytes + FORM_OVERHEAD``: nothing beyond that is read, spooled or parsed."""
    received = 0

    async def limited() -> dict:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > max_bytes + FORM_OVERHEAD:
                raise BodyTooLarge
        return message

    return limited


# What a --host must be, said by the errors on one that cannot be served on.
_HOSTS = "127.0.0.1 (reached from this machine only) or 0.0.0.0 (from every network it is on)"


def check_options(host: str, port: int, max_bytes: int, max_pixels: int) -> None:
    """One-line errors for ``clipfuse serve`` values that cannot work, before the model loads
    (a ``host`` that is no IP address and no name that resolves; one that resolves to an
    address of another machine fails when the port is bound)."""
    try:
        socket.getaddrinfo(host, None, _family(host), socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise ClipfuseError(
            f"--host {host}: not an IP address or a host name that resolves "
            f"({error.strerror or error}); expected an address of this machine, e.g. {_HOSTS}"
        ) from error
    if not 0 <= port <= 65535:
        raise ClipfuseError(f"--port {port}: expected a port number in 0..65535")
    for flag, value in (("--max-bytes", max_bytes), ("--max-pixels", max_pixels)):
        if value < 1:
            raise ClipfuseError(f"{flag} {value}: expected a positive integer")


def serve(
    model_path: str,
    host: str = "127.0.0.1",
    port: int = 7860,
    device: str | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> None:
    """Load the model and serve the page until interrupted."""
    check_options(host, port, max_bytes, max_pixels)
    uvicorn = require("uvicorn", "clipfuse serve")

    from clipfuse.inference.pretrained import load

    model = load(model_path, device=device)
    app = create_app(model, max_bytes=max_bytes, max_pixels=max_pixels)
    listening = bind_socket(host, port)  # fails before "serving on" when the port is taken
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    port = listening.getsockname()[1]  # the one the system chose for --port 0
    print(f"clipfuse: serving {model} on http://{host}:{port}/ (Ctrl+C stops)", flush=True)
    server.run(sockets=[listening])


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``, or a one-line error that says why it cannot be
    had: the port is taken, ``host`` is not this machine's, or what the system said."""
    listening = socket.socket(_family(host), socket.SOCK_STREAM)
    try:
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listening.bind((host, port))
        listening.listen(128)
    except OSError as error:
        listening.close()
        reason = error.strerror or str(error)
        if error.errno == errno.EADDRINUSE:
            reason += " (is another server using the port? choose another with --port)"
        elif isinstance(error, socket.gaierror) or error.errno in (
            errno.EADDRNOTAVAIL,
            errno.EINVAL,
        ):
            reason = f"--host {host} is not an address of this machine ({reason}): choose {_HOSTS}"
        elif error.errno == errno.EACCES:
            reason += " (ports below 1024 need root: choose another with --port)"
        raise ClipfuseError(f"cannot serve on {host}:{port}: {reason}") from error
    return listening


def _family(host: str) -> socket.AddressFamily:
    """IPv6 for an address with colons, else IPv4 (names resolve to IPv4 addresses)."""
    return socket.AF_INET6 if ":" in host else socket.AF_INET
