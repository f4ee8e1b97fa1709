"""``clipfuse serve`` end to end: the page in headless Chromium (Playwright) against a real
server. With ``CLIPFUSE_SCREENSHOTS=1`` it also writes docs/images/demo_desktop.png and
demo_narrow.png (``CLIPFUSE_DEMO_MODEL`` picks the model shown; default: the tiny test model)."""

import base64
import io
import os
import re
import shutil
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

CHROMIUM = Path(os.environ.get("CLIPFUSE_CHROMIUM", "/usr/bin/chromium"))  # Debian's chromium
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "images"


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
    samples = require_shared("samples/cityscapes_segmentation.bmp").parent
    model = os.environ.get("CLIPFUSE_DEMO_MODEL", str(tiny_run.pretrained))
    port = free_port()
    log = open(tmp_path / "server.log", "w+")
    command = ["serve", "--model", model, "--port", str(port), "--device", "cpu"]
    process = subprocess.Popen(
        [sys.executable, "-m", "clipfuse.cli", *command, "--examples", str(samples)],
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


DROP_OR_PASTE = """async (kind) => {
  const blob = await (await fetch("examples/bird.bmp")).blob();
  const data = new DataTransfer();
  data.items.add(new File([blob], `${kind}.bmp`, { type: "image/bmp" }));
  const options = { bubbles: true, cancelable: true };
  if (kind === "drop") {
    document.getElementById("drop").dispatchEvent(
      new DragEvent("drop", { ...options, dataTransfer: data }));
  } else {
    document.dispatchEvent(new ClipboardEvent("paste", { ...options, clipboardData: data }));
  }
}"""


def canvas_pixels(page) -> np.ndarray:
    url = page.evaluate("() => document.getElementById('canvas').toDataURL('image/png')")
    data = base64.b64decode(url.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def label_map_of(page) -> Image.Image:
    url = page.get_attribute("#download-labels", "href")
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))


def set_opacity(page, key: str) -> None:
    page.focus("#opacity")
    page.keyboard.press(key)  # Home: 0 %, End: 100 %


def test_the_page_in_a_real_browser(chromium, server, tmp_path):
    sample = require_shared("samples/cityscapes_segmentation.bmp")
    page = chromium.new_page(viewport={"width": 1280, "height": 800})
    page.goto(server)
    assert "clipfuse" in page.title()
    assert "Apache-2.0" in page.text_content("#examples-licence")

    page.click('button[aria-label="segment the example cityscapes_segmentation.bmp"]')
    page.wait_for_selector("#legend tr.class-row", timeout=120_000)
    assert page.text_content("#error") == ""
    names = page.evaluate("() => fetch('api/info').then((r) => r.json())")["class_names"]
    rows = page.locator("#legend tr.class-row")
    assert rows.count() == len(names) and "%" in rows.first.inner_text()
    labels = label_map_of(page)
    assert labels.size == (513, 513) and labels.mode == "P"

    set_opacity(page, "Home")
    original = canvas_pixels(page)
    assert np.array_equal(original, np.asarray(Image.open(sample).convert("RGB")))
    set_opacity(page, "End")
    coloured = canvas_pixels(page)
    assert np.array_equal(coloured, np.asarray(labels.convert("RGB")))
    page.keyboard.press("PageDown")  # the slider moves: the canvas blends again
    assert not np.array_equal(canvas_pixels(page), coloured)

    box = page.locator("#canvas").bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.8)
    hover = page.text_content("#hover")
    found = re.fullmatch(r"(.+) \(x (\d+), y (\d+)\)", hover)
    assert found, hover
    x, y = int(found[2]), int(found[3])
    assert found[1] == names[np.asarray(labels)[y, x]]

    for link, mode in (("#download-labels", "P"), ("#download-overlay", "RGBA")):
        with page.expect_download() as download:
            page.click(link)
        saved = Image.open(download.value.path())
        assert (saved.format, saved.size, saved.mode) == ("PNG", (513, 513), mode)
        assert download.value.suggested_filename.startswith("cityscapes_segmentation_")

    if os.environ.get("CLIPFUSE_SCREENSHOTS") == "1":
        screenshots(page, tmp_path)

    for kind in ("drop", "paste"):  # an image dropped on the page, then one pasted
        page.evaluate(DROP_OR_PASTE, kind)
        page.wait_for_function(
            "(kind) => document.getElementById('download-labels').download === "
            "`${kind}_labels.png`",
            arg=kind,
            timeout=120_000,
        )
    assert label_map_of(page).size == Image.open(sample.parent / "bird.bmp").size

    text_file = tmp_path / "notes.txt"
    text_file.write_text("this is not an image\n")
    page.set_input_files("#image", str(text_file))
    page.wait_for_function("() => document.getElementById('error').textContent.length > 0")
    assert "not an image" in page.text_content("#error")

    page.fill("#labels", f"{names[0]}, {names[1]}=renamed")
    page.set_input_files("#image", str(sample))
    page.wait_for_function(
        "() => document.querySelectorAll('#legend tr.class-row').length === 2", timeout=120_000
    )
    shown = page.locator("#legend tr.class-row td:nth-child(2)").all_inner_texts()
    assert sorted(shown) == sorted([names[0], "renamed"]) and page.text_content("#error") == ""
    page.close()


def screenshots(page, tmp_path: Path) -> None:
    """The page at 1280 x 800 and at 420 x 860 (stacked panels), as docs/images/demo_*.png,
    quantised to 256 colours to stay small."""
    set_opacity(page, "End")
    for _ in range(4):
        page.keyboard.press("PageDown")  # 60 %: the image shows through
    for name, size in (("desktop", (1280, 800)), ("narrow", (420, 860))):
        page.set_viewport_size({"width": size[0], "height": size[1]})
        if name == "narrow":  # the result, below the stacked image panel
            page.evaluate("() => window.scrollTo(0, document.getElementById('result').offsetTop)")
        box = page.locator("#canvas").bounding_box()
        page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.75)
        raw = tmp_path / f"{name}.png"
        page.screenshot(path=str(raw))
        Image.open(raw).convert("RGB").quantize(256).save(raw, optimize=True)
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(raw, SCREENSHOTS / f"demo_{name}.png")
    page.set_viewport_size({"width": 1280, "height": 800})
