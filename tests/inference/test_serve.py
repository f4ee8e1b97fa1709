"""``clipfuse serve``'s HTTP API, in process: the label map, areas, colours and timings of
``POST /api/predict``, the examples, the OpenAPI docs and the bounded queue (503)."""

import asyncio
import base64
import io
import socket

import numpy as np
import pytest
from PIL import Image

from clipfuse.cli import main
from clipfuse.errors import ClipfuseError


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def decode_data_url(url: str) -> Image.Image:
    prefix = "data:image/png;base64,"
    assert url.startswith(prefix)
    return Image.open(io.BytesIO(base64.b64decode(url[len(prefix) :])))


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    from clipfuse.inference.serve_page import find_examples

    folder = tmp_path_factory.mktemp("examples")
    Image.fromarray(np.full((40, 48, 3), 90, np.uint8)).save(folder / "street.png")
    Image.fromarray(np.full((20, 20, 3), 200, np.uint8)).save(folder / "field.bmp")
    (folder / "notes.txt").write_text("not served\n")
    (folder / "LICENSE-demo").write_text("Apache License 2.0\n")
    (folder / "README.md").write_text("# Demo images (Apache-2.0, see LICENSE-demo)\n\nmore\n")
    return find_examples(folder)


@pytest.fixture(scope="module")
def client(tiny_model, examples):
    from fastapi.testclient import TestClient

    from clipfuse.inference.serve import create_app

    app = create_app(tiny_model, max_bytes=200_000, max_pixels=600 * 600, examples=examples)
    return TestClient(app)


def post(client, data: bytes, name="image.png", **fields):
    return client.post("/api/predict", files={"image": (name, data)}, data=fields)


def test_page_and_info(client):
    page = client.get("/")
    assert page.status_code == 200
    for element in ('id="canvas"', 'id="opacity"', 'id="hover"', 'id="download-labels"'):
        assert element in page.text
    assert "$" + "script" not in page.text and '"class_names": ["sky", "road", "car"]' in page.text
    assert client.get("/health").text == "ok"
    info = client.get("/api/info").json()
    assert info["class_names"] == ["sky", "road", "car"] and info["open_vocab"] is True
    assert (info["queue"], info["max_bytes"]) == (4, 200_000)


def test_the_label_png_is_the_models_label_map(client, tiny_model, tiny_run):
    image = np.asarray(Image.open(tiny_run.val_images[0]).convert("RGB"))
    answer = post(client, png_bytes(image))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    expected = tiny_model.predict(image, scores=False)
    labels = decode_data_url(body["label_map"])
    assert labels.mode == "P" and labels.size == (48, 40)
    assert np.array_equal(np.asarray(labels), expected.label_map)
    assert (body["width"], body["height"], body["mode"]) == (48, 40, "decoder")
    assert body["class_names"] == ["sky", "road", "car"]
    assert body["palette"] == tiny_model.palette.tolist()
    assert labels.getpalette()[:9] == [v for colour in body["palette"] for v in colour]
    counts = np.bincount(expected.label_map.ravel(), minlength=3) / expected.label_map.size
    assert body["areas"] == pytest.approx(counts.tolist()) and sum(body["areas"]) == 1.0
    timing = body["timing"]
    assert set(timing) == {"wait_ms", "preprocess_ms", "model_ms", "postprocess_ms"}
    assert all(value >= 0 for value in timing.values()) and timing["model_ms"] > 0

    opened = post(client, png_bytes(image), labels="sky, lake", open_vocab="true").json()
    assert opened["mode"] == "score_map" and opened["class_names"] == ["sky", "lake"]
    assert np.asarray(decode_data_url(opened["label_map"])).max() <= 1
    assert len(opened["palette"]) == 2 and sum(opened["areas"]) == pytest.approx(1.0)


def test_repeated_colours_are_made_distinct():
    from clipfuse.inference.serve_predict import distinct_colours

    palette = np.array([[10, 20, 30], [10, 20, 30], [10, 20, 31], [0, 0, 255], [0, 0, 255]])
    assert distinct_colours(palette) == [
        [10, 20, 30], [10, 20, 31], [10, 20, 32], [0, 0, 255], [0, 0, 0]
    ]  # fmt: skip


def test_openapi_documents_the_answer(client):
    assert client.get("/docs").status_code == 200
    schema = client.get("/openapi.json").json()
    fields = schema["components"]["schemas"]["Prediction"]["properties"]
    assert {"label_map", "class_names", "palette", "areas", "timing", "width"} <= set(fields)
    assert "palette PNG" in fields["label_map"]["description"]
    assert {"200", "413", "422", "503"} <= set(schema["paths"]["/api/predict"]["post"]["responses"])


def test_examples_are_served_with_their_licence(client, examples):
    info = client.get("/api/info").json()
    assert info["examples"] == ["field.bmp", "street.png"]
    assert info["examples_licence"] == "Demo images (Apache-2.0, see LICENSE-demo)"
    assert info["examples_licence_file"] == "LICENSE-demo"
    served = client.get("/examples/street.png")
    assert served.status_code == 200
    assert served.content == (examples.folder / "street.png").read_bytes()
    assert client.get("/examples/LICENSE-demo").text.startswith("Apache License")
    for name in ("notes.txt", "README.md", "missing.png"):
        answer = client.get(f"/examples/{name}")
        assert answer.status_code == 404 and "no example named" in answer.json()["error"]
    assert client.get("/examples/..%2Fexamples0%2Fnotes.txt").status_code == 404


def test_the_examples_folder_option(tmp_path, monkeypatch, capsys):
    from clipfuse.inference.serve import examples_folder

    monkeypatch.setenv("CLIPFUSE_SHARED", str(tmp_path / "no-shared"))
    assert examples_folder(None) is None
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no example images on the page" in err
    with pytest.raises(ClipfuseError, match=r"--examples .*: the path is not a folder; expected"):
        examples_folder(str(tmp_path / "missing"))
    with pytest.raises(ClipfuseError, match="the path holds no image"):
        examples_folder(str(tmp_path))
    Image.new("RGB", (4, 4)).save(tmp_path / "a.png")
    assert examples_folder(str(tmp_path)) == tmp_path


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
    # Still serving, and every request left the queue.
    image = np.asarray(Image.open(tiny_run.val_images[1]))
    assert post(client, png_bytes(image)).status_code == 200
    assert client.app.state.queue.admitted == 0


def test_a_full_queue_answers_503_with_retry_after(tiny_model, tiny_run):
    """With ``queue=1`` and the one admitted request held in the model (its lock taken here),
    the next request is refused at once; once the model is free, requests are served again."""
    import httpx

    from clipfuse.inference.serve import create_app

    app = create_app(tiny_model, queue=1)
    files = {"image": ("a.png", tiny_run.val_images[0].read_bytes())}

    async def run():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://serve") as client:
            tiny_model._lock.acquire()  # the prediction thread waits for the model
            try:
                first = asyncio.create_task(client.post("/api/predict", files=files))
                while app.state.queue.admitted == 0:
                    await asyncio.sleep(0.01)
                refused = await client.post("/api/predict", files=files)
            finally:
                tiny_model._lock.release()
            return await first, refused, await client.post("/api/predict", files=files)

    first, refused, later = asyncio.run(run())
    assert refused.status_code == 503
    assert refused.json()["error"].startswith("the server is busy: 1 requests are being")
    assert int(refused.headers["retry-after"]) >= 1
    assert first.status_code == 200 and first.json()["timing"]["wait_ms"] >= 0
    assert later.status_code == 200 and app.state.queue.admitted == 0


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
