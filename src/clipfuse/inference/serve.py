"""``clipfuse serve``: a local web page to try a trained model (FastAPI + one HTML page).

Routes: ``GET /`` the page; ``GET /api/info`` the model's vocabulary and the limits;
``POST /api/predict`` (multipart: ``image`` file, optional ``labels`` text and ``open_vocab``
flag) -> the label map as a PNG, class names, colours, areas and timings
(:class:`~clipfuse.inference.serve_schema.Prediction`), or ``{"error": ...}`` with status 400
(bad labels), 413 (too large), 422 (not an image) or 503 (busy, with ``Retry-After``);
``GET /examples/{name}`` the example images; ``GET /health`` -> ok; ``GET /docs`` and
``/openapi.json`` the API's documentation.

Concurrency: a bounded queue, chosen by measurement (docs/guide/inference.md, "Web demo"): a
pool of prediction threads answered concurrent requests no sooner, as
:meth:`ClipfuseModel.predict` holds the model's lock and the model already uses every core, and
each thread that allocates keeps a glibc heap of its own (docs/research/robustness.md, "Memory
of predict and serve"). So predictions run on one thread, one at a time; at most ``queue``
requests are admitted at once, running or waiting, uploads included, so memory stays bounded;
one more gets 503 with a ``Retry-After`` estimated from the last prediction's time.
"""

import asyncio
import errno
import math
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from clipfuse.errors import ClipfuseError
from clipfuse.extras import require
from clipfuse.inference.pretrained import ClipfuseModel
from clipfuse.inference.serve_page import EXAMPLE_SUFFIXES, Examples, demo_page, find_examples
from clipfuse.inference.serve_predict import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_PIXELS,
    UploadError,
    predict_upload,
    size_text,
)

DEFAULT_QUEUE = 4
FORM_OVERHEAD = 64 * 1024
"""Bytes a request may hold beyond ``max_bytes``: the multipart headers and the other fields."""


class BodyTooLarge(Exception):
    """Raised by the request stream once more than ``max_bytes + FORM_OVERHEAD`` have arrived."""


class RequestQueue:
    """Admits at most ``size`` requests at once. Counted on the event loop's thread only, so
    it needs no lock."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.admitted = 0
        self.last_seconds = 1.0  # the last prediction's time, for Retry-After

    def retry_after(self) -> int:
        """Seconds until a place is likely free: the admitted requests at the last one's pace."""
        return max(1, math.ceil(self.admitted * self.last_seconds))


def create_app(
    model: ClipfuseModel,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    queue: int = DEFAULT_QUEUE,
    examples: Examples | None = None,
):
    """The FastAPI application serving ``model`` (the app's ``state.queue`` is its
    :class:`RequestQueue`)."""
    require("fastapi", "clipfuse serve")
    require("python_multipart", "clipfuse serve (uploads)")
    from fastapi import FastAPI, Request
    from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse

    from clipfuse.inference import serve_schema as schema

    examples = examples or Examples()
    predictions = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clipfuse-predict")
    app = FastAPI(title="clipfuse", description="Segment an image with a clipfuse model.")
    app.state.queue = waiting = RequestQueue(queue)
    info = schema.Info(
        method=model.method,
        backbone=model.backbone,
        class_names=model.class_names,
        open_vocab=model.supports_open_vocab,
        text_encoder=model.text["encoder"] if model.supports_open_vocab else None,
        max_bytes=max_bytes,
        max_pixels=max_pixels,
        queue=queue,
        examples=list(examples.names),
        examples_licence=examples.licence,
        examples_licence_file=examples.licence_file,
    )
    page = demo_page(info.model_dump())
    problems = {status: {"model": schema.Problem} for status in (400, 413, 422, 503)}

    def error(message: str, status: int, headers: dict | None = None) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> str:
        return page

    @app.get("/health", response_class=PlainTextResponse)
    def health() -> str:
        return "ok"

    @app.get("/api/info", response_model=schema.Info)
    def api_info() -> schema.Info:
        return info

    @app.get("/examples/{name}", responses={404: {"model": schema.Problem}})
    def example(name: str):
        path = examples.path(name)
        if path is None or not path.is_file():
            return error(f"no example named {name!r}: the examples are {info.examples}", 404)
        return FileResponse(path)

    @app.post("/api/predict", response_model=schema.Prediction, responses=problems)
    async def api_predict(request: Request):
        if waiting.admitted >= waiting.size:
            seconds = waiting.retry_after()
            return error(
                f"the server is busy: {waiting.admitted} requests are being segmented or wait "
                f"(at most {waiting.size}, --queue); try again in {seconds} s",
                503,
                {"Retry-After": str(seconds)},
            )
        waiting.admitted += 1
        try:
            return await _answer(request, model, predictions, waiting, max_bytes, max_pixels)
        finally:
            waiting.admitted -= 1

    return app


async def _answer(request, model, predictions, waiting, max_bytes: int, max_pixels: int):
    """The answer to one admitted ``POST /api/predict``: the prediction, or an error."""
    from fastapi import Request
    from fastapi.responses import JSONResponse
    from starlette.datastructures import UploadFile

    def error(message: str, status: int) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    admitted = time.perf_counter()
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > max_bytes + FORM_OVERHEAD:
        return error(
            f"the upload is {size_text(int(length))}: the limit is {size_text(max_bytes)}", 413
        )
    try:  # a chunked body (no Content-Length) is counted as it arrives
        limited = Request(request.scope, _limited_receive(request.receive, max_bytes))
        form = await limited.form(max_files=1, max_fields=8)
    except BodyTooLarge:
        return error(f"the upload is larger than the limit of {size_text(max_bytes)}", 413)
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
            predictions,
            predict_upload,
            model,
            data,
            labels,
            open_vocab,
            max_pixels,
            max_bytes,
            admitted,
        )
        timing = answer["timing"]
        waiting.last_seconds = (sum(timing.values()) - timing["wait_ms"]) / 1000
        return answer
    except UploadError as problem:
        return error(str(problem), problem.status)
    except Exception as problem:  # keep serving, say what went wrong
        return error(f"internal error: {type(problem).__name__}: {problem}", 500)
    finally:
        await form.close()


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


def check_options(host: str, port: int, max_bytes: int, max_pixels: int, queue: int) -> None:
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
    for flag, value in (
        ("--max-bytes", max_bytes),
        ("--max-pixels", max_pixels),
        ("--queue", queue),
    ):
        if value < 1:
            raise ClipfuseError(f"{flag} {value}: expected a positive integer")


def serve(
    model_path: str,
    host: str = "127.0.0.1",
    port: int = 7860,
    device: str | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    queue: int = DEFAULT_QUEUE,
    examples: str | None = None,
) -> None:
    """Load the model and serve the page until interrupted. ``examples``: a folder of example
    images (default: the shared samples, none when that folder is absent)."""
    check_options(host, port, max_bytes, max_pixels, queue)
    found = find_examples(examples_folder(examples))
    uvicorn = require("uvicorn", "clipfuse serve")

    from clipfuse.inference.pretrained import load

    model = load(model_path, device=device)
    app = create_app(model, max_bytes, max_pixels, queue, found)
    listening = bind_socket(host, port)  # fails before "serving on" when the port is taken
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    port = listening.getsockname()[1]  # the one the system chose for --port 0
    print(f"clipfuse: serving {model} on http://{host}:{port}/ (Ctrl+C stops)", flush=True)
    server.run(sockets=[listening])


def examples_folder(option: str | None) -> Path | None:
    """The folder of example images: ``option``, which must be a folder with images, or by
    default the shared samples; None (said on stderr) when the default folder has none."""
    from clipfuse.paths import shared_root

    kinds = "PNG, JPEG, BMP, WebP or GIF"
    folder = Path(option) if option is not None else shared_root() / "samples"
    has_images = folder.is_dir() and any(
        p.suffix.lower() in EXAMPLE_SUFFIXES for p in folder.iterdir()
    )
    if has_images:
        return folder
    if option is not None:
        state = "holds no image" if folder.is_dir() else "is not a folder"
        raise ClipfuseError(
            f"--examples {option}: the path {state}; expected a folder of {kinds} images"
        )
    print(
        f"clipfuse: no example images on the page: {folder} is absent or holds none "
        "(--examples DIR names a folder of images)",
        file=sys.stderr,
    )
    return None


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
