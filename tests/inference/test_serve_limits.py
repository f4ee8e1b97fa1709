"""``clipfuse serve``'s limits (issue 24): a chunked upload is counted as it arrives and refused
once over ``--max-bytes``; impossible flag values are one-line errors."""

import asyncio
import io

import numpy as np
import pytest
from helpers import error_line
from PIL import Image

from clipfuse.cli import main
from clipfuse.inference.serve import FORM_OVERHEAD, create_app

BOUNDARY = "clipfuse-test-boundary"
CHUNK = 64 * 1024


def multipart_head(filename: str = "big.png") -> bytes:
    return (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="image"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()


def post_chunked(app, parts, sent: list[int]) -> tuple[int, dict]:
    """POST ``parts`` (bytes) as a chunked body (no Content-Length) to the ASGI app, chunk by
    chunk as the app reads them; ``sent`` gets the number of bytes the app pulled."""
    import httpx

    async def body():
        for part in parts:
            sent[0] += len(part)
            yield part

    async def run():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://serve") as client:
            headers = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}
            answer = await client.post("/api/predict", content=body(), headers=headers)
            return answer.status_code, answer.json()

    return asyncio.run(run())


def test_a_chunked_upload_over_the_limit_is_refused_as_it_arrives(tiny_model):
    limit = 200_000
    app = create_app(tiny_model, max_bytes=limit)

    def one_gigabyte():
        yield multipart_head()
        for _ in range(2**30 // CHUNK):
            yield b"x" * CHUNK

    sent = [0]
    status, answer = post_chunked(app, one_gigabyte(), sent)
    assert status == 413
    assert answer["error"] == "the upload is larger than the limit of 0.2 MB (200,000 bytes)"
    assert limit < sent[0] <= limit + FORM_OVERHEAD + 2 * CHUNK  # not the gigabyte


def test_a_chunked_upload_under_the_limit_is_segmented(tiny_model):
    buffer = io.BytesIO()
    Image.fromarray(np.full((40, 48, 3), 120, dtype=np.uint8)).save(buffer, format="PNG")
    data = buffer.getvalue()
    parts = [
        multipart_head("small.png"),
        data[:100],
        data[100:],
        f"\r\n--{BOUNDARY}--\r\n".encode(),
    ]
    sent = [0]
    status, answer = post_chunked(create_app(tiny_model, max_bytes=200_000), parts, sent)
    assert status == 200, answer
    assert (answer["width"], answer["height"]) == (48, 40)
    assert sent[0] == sum(map(len, parts))


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--port", "99999"], "error: --port 99999: expected a port number in 0..65535"),
        (["--port", "-1"], "error: --port -1: expected a port number in 0..65535"),
        (["--max-bytes", "-5"], "error: --max-bytes -5: expected a positive integer"),
        (["--max-pixels", "0"], "error: --max-pixels 0: expected a positive integer"),
        (["--queue", "0"], "error: --queue 0: expected a positive integer"),
    ],
)
def test_impossible_serve_flags_are_one_line_before_the_model_loads(
    tmp_path, capsys, flags, message
):
    missing_model = tmp_path / "no-such-model"  # the flags are checked first
    assert main(["serve", "--model", str(missing_model), *flags]) == 2
    assert error_line(capsys.readouterr().err) == message


@pytest.mark.parametrize("host", ["999.1.1.1", "no-such-host.invalid"])
def test_a_host_that_is_no_address_is_said_so_before_the_model_loads(tmp_path, capsys, host):
    missing_model = tmp_path / "no-such-model"  # the host is checked first
    assert main(["serve", "--model", str(missing_model), "--host", host]) == 2
    line = error_line(capsys.readouterr().err)
    assert line.startswith(f"error: --host {host}: not an IP address or a host name that resolves")
    assert "expected an address of this machine, e.g. 127.0.0.1" in line
    assert "port" not in line  # was: "... (is another server using the port? choose another ...)"


def test_an_address_of_another_machine_is_not_taken_for_a_busy_port():
    from clipfuse.errors import ClipfuseError
    from clipfuse.inference.serve import bind_socket

    with pytest.raises(ClipfuseError) as error:  # TEST-NET-1: documentation only, never assigned
        bind_socket("192.0.2.1", 7860)
    message = str(error.value)
    assert message.startswith(
        "cannot serve on 192.0.2.1:7860: --host 192.0.2.1 is not an address of this machine ("
    )
    assert "choose 127.0.0.1" in message and "another server" not in message


def test_an_oversized_streamed_upload_does_not_claim_a_size():
    from clipfuse.inference.serve_predict import UploadError, decode_upload

    with pytest.raises(UploadError) as error:
        decode_upload(b"x" * 21_000_001, 4096 * 4096, 21_000_000)
    assert str(error.value) == "the file is larger than the limit of 21.0 MB (21,000,000 bytes)"


def test_an_oversized_declared_upload_gives_both_sizes_exactly(model):
    from fastapi.testclient import TestClient

    from clipfuse.inference.serve import create_app

    client = TestClient(create_app(model, max_bytes=20 * 1024 * 1024))
    length = 20 * 1024 * 1024 + 64 * 1024 + 1  # rounds to 21.0 MB, as the limit does
    answer = client.post("/api/predict", content=b"x" * length)
    assert answer.status_code == 413
    assert answer.json()["error"] == (
        "the upload is 21.0 MB (21,037,057 bytes): the limit is 21.0 MB (20,971,520 bytes)"
    )
