"""``clipfuse serve``: the HTTP API (in process) and the page end to end in headless Chromium."""

import base64
import io
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from helpers import require_shared
from PIL import Image

from clipfuse.cli import main

CHROMIUM = Path(os.environ.get("CLIPFUSE_CHROMIUM", "/usr/bin/chromium"))  # Debian's chromium
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def decode_data_url(url: str) -> Image.Image:
    prefix = "data:image/png;base64,"
    assert url.startswith(prefix)
    return Image.open(io.BytesIO(base64.b64decode(url[len(prefix) :])))


@pytest.fixture(scope="module")
def client(tiny_model):
    from fastapi.testclient import TestClient

    from clipfuse.inference.serve import create_app

    return TestClient(create_app(tiny_model, max_bytes=200_000, max_pixels=600 * 600))


def post(client, data: bytes, name="image.png", **fields):
    return client.post("/api/predict", files={"image": (name, data)}, data=fields)


def test_page_and_info(client):
    page = client.get("/")
    assert page.status_code == 200 and 'id="image"' in page.text and "sky, road, car" in page.text
    assert 'id="open-vocab"' in page.text
    assert client.get("/health").text == "ok"
    assert client.get("/api/info").json()["class_names"] == ["sky", "road", "car"]


def test_predict_api(client, tiny_run):
    image = np.asarray(Image.open(tiny_run.val_images[0]))
    answer = post(client, png_bytes(image))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["width"], body["height"], body["mode"]) == (48, 40, "decoder")
    overlay = decode_data_url(body["overlay"])
    assert overlay.width > 48 and overlay.height >= 40
    assert {row["name"] for row in body["classes"]} == {"sky", "road", "car"}
    assert sum(row["area"] for row in body["classes"]) == pytest.approx(1.0)
    opened = post(client, png_bytes(image), labels="sky, lake", open_vocab="true").json()
    assert opened["mode"] == "score_map"
    assert [row["name"] for row in opened["classes"]] != [] and {
        row["name"] for row in opened["classes"]
    } == {"sky", "lake"}


def test_malformed_uploads_get_readable_messages(client, tiny_run):
    not_image = post(client, b"hello, I am a text file\n", name="notes.txt")
    assert not_image.status_code == 422 and "not an image" in not_image.json()["error"]
    assert post(client, b"").json()["error"].startswith("the upload is empty")
    truncated = png_bytes(np.zeros((50, 50, 3), np.uint8))[:60]
    assert post(client, truncated).status_code == 422
    huge = post(client, png_bytes(np.zeros((700, 700), np.uint8)))  # small file, many pixels
    assert huge.status_code == 413 and "700 x 700 pixels" in huge.json()["error"]
    heavy = post(client, np.random.default_rng(0).bytes(300_000), name="big.png")
    assert heavy.status_code == 413 and "MB" in heavy.json()["error"]
    labels = post(client, png_bytes(np.zeros((40, 48, 3), np.uint8)), labels="road, unicorn")
    assert labels.status_code == 400 and "'unicorn'" in labels.json()["error"]
    missing = client.post("/api/predict", data={"labels": "road"})
    assert missing.status_code == 422 and "no image" in missing.json()["error"]
    # Still serving.
    image = np.asarray(Image.open(tiny_run.val_images[1]))
    assert post(client, png_bytes(image)).status_code == 200


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def chromium():
    in_ci = os.environ.get("CI", "").lower() == "true"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        message = "the playwright package is absent (pip install -e '.[dev]')"
        pytest.fail(message) if in_ci else pytest.skip(message)
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is absent (apt-get install -y chromium, or set CLIPFUSE_CHROMIUM)"
        pytest.fail(message) if in_ci else pytest.skip(message)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def server(tiny_run, tmp_path):
    port = free_port()
    log = open(tmp_path / "server.log", "w+")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "clipfuse.cli",
            "serve",
            "--model",
            str(tiny_run.pretrained),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--device",
            "cpu",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 180
        while True:
            if process.poll() is not None:
                log.seek(0)
                pytest.fail(f"clipfuse serve exited with {process.returncode}:\n{log.read()}")
            try:
                with urllib.request.urlopen(url + "health", timeout=2) as answer:
                    if answer.read() == b"ok":
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("clipfuse serve did not answer within 180 s")
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def overlay_of(page) -> Image.Image:
    page.wait_for_function(
        "() => { const img = document.getElementById('overlay');"
        " return img.src.startsWith('data:') && img.complete && img.naturalWidth > 0; }",
        timeout=120_000,
    )
    natural = page.evaluate(
        "() => [document.getElementById('overlay').naturalWidth,"
        " document.getElementById('overlay').naturalHeight]"
    )
    image = decode_data_url(page.get_attribute("#overlay", "src"))
    assert list(image.size) == natural  # what the browser decoded is the PNG we read back
    return image


def test_the_page_in_a_real_browser(chromium, server, tmp_path):
    sample = require_shared("samples/cityscapes_segmentation.bmp")
    page = chromium.new_page()
    page.goto(server)
    assert "clipfuse" in page.title()

    page.set_input_files("#image", str(sample))
    page.click("#run")
    overlay = overlay_of(page)
    assert overlay.height == 513 and overlay.width > 513  # the image plus the legend
    colours = np.unique(np.asarray(overlay.convert("RGB"))[:, :513].reshape(-1, 3), axis=0)
    assert len(colours) > 1
    rows = page.locator("#areas tr.class-row")
    assert rows.count() == 3
    assert "%" in rows.first.inner_text()
    assert page.text_content("#error") == ""

    text_file = tmp_path / "notes.txt"
    text_file.write_text("this is not an image\n")
    page.set_input_files("#image", str(text_file))
    page.click("#run")
    page.wait_for_function("() => document.getElementById('error').textContent.length > 0")
    assert "not an image" in page.text_content("#error")

    page.evaluate("() => { document.getElementById('overlay').src = ''; }")
    page.set_input_files("#image", str(sample))
    page.fill("#labels", "road, sky=heavens")
    page.click("#run")
    overlay = overlay_of(page)
    assert overlay.height == 513
    assert page.text_content("#error") == ""
    names = page.locator("#areas tr.class-row td:nth-child(2)").all_inner_texts()
    assert sorted(names) == ["heavens", "road"]
    page.close()


def test_serve_on_a_busy_port_fails_before_announcing(world, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        capsys.readouterr()
        assert main(["serve", "--model", str(world.checkpoint), "--port", str(port)]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(f"error: cannot serve on 127.0.0.1:{port}: ")
    assert captured.err.count("\n") == 1 and "--port" in captured.err
    assert "serving" not in captured.out
