"""Memory of ``clipfuse predict`` on a large photo and of a long-running ``clipfuse serve``
(docs/research/robustness.md, "Memory of predict and serve"), on a random-weight model of the demo
config (configs/plain_mobilenetv2_camvid_256x320_800.yaml; nothing is downloaded).

    PYTHONPATH=src .venv/bin/python docs/scripts/memory_check.py predict --folder /tmp/memcheck
    PYTHONPATH=src .venv/bin/python docs/scripts/memory_check.py serve --folder /tmp/memcheck \\
        --requests 300 --clients 3

``predict``: one 4000x3000 photo through ``clipfuse predict`` in a fresh process; its peak
resident memory while it works (``VmHWM`` when the command returns) and as the kernel counts it
at exit (``ru_maxrss``, what ``/usr/bin/time -v`` shows: it also counts the library pages
torch touches while the interpreter shuts down). ``serve``: ``clipfuse serve`` on 127.0.0.1
(a port the system chooses) and ``--requests`` uploads of photos of 0.3 to 5 megapixels in a
fixed random order, ``--clients`` at a time; the server's resident memory after each round.
The folder keeps the model and the photos for the next call.
"""

import argparse
import json
import os
import random
import re
import resource
import subprocess
import sys
import textwrap
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

LARGE = (4000, 3000)
SERVED = [(640, 480), (1024, 768), (1280, 960), (1600, 1200), (1920, 1080), (1080, 1920)]
SERVED += [(2048, 1536), (2592, 1944)]
CLIPFUSE = [sys.executable, "-m", "clipfuse.cli"]


def prepare(folder: Path) -> None:
    """The random-weight demo model (``folder/model``) and the photos (the shared street scene,
    resized), unless already there."""
    if not (folder / "model" / "model.safetensors").is_file():
        import torch

        from clipfuse.build import class_names_of, create_model_from_config
        from clipfuse.config import load_config
        from clipfuse.inference.pretrained import ClipfuseModel

        config = load_config("configs/plain_mobilenetv2_camvid_256x320_800.yaml")
        names = class_names_of(config)
        torch.manual_seed(0)
        segmentor = create_model_from_config(config, names, pretrained=False)
        ClipfuseModel(segmentor, config, names).save_pretrained(folder / "model")
    from PIL import Image

    from clipfuse.paths import shared_root

    scene = shared_root() / "samples" / "cityscapes_segmentation.bmp"
    for width, height in [LARGE, *SERVED]:
        path = folder / f"photo_{width}x{height}.jpg"
        if not path.is_file():
            with Image.open(scene) as image:
                image.convert("RGB").resize((width, height), Image.BILINEAR).save(path, quality=90)


def check_predict(folder: Path) -> None:
    photo = folder / f"photo_{LARGE[0]}x{LARGE[1]}.jpg"
    argv = ["predict", "--model", str(folder / "model"), str(photo), "--out", str(folder / "out")]
    argv += ["--device", "cpu"]
    script = textwrap.dedent(
        f"""
        import re, sys
        from pathlib import Path
        from clipfuse.cli import main
        code = main({argv!r})
        hwm = re.search(r"VmHWM:\\s+(\\d+)", Path("/proc/self/status").read_text()).group(1)
        print("VmHWM", hwm, file=sys.stderr)
        sys.exit(code)
        """
    )
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode:
        sys.exit(done.stderr)
    working = int(re.search(r"VmHWM (\d+)", done.stderr).group(1)) / 1024
    at_exit = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(
        f"clipfuse predict, {LARGE[0]}x{LARGE[1]}: peak {working:.0f} MiB while working, "
        f"{at_exit:.0f} MiB at exit (ru_maxrss), {seconds:.1f} s"
    )


def upload(url: str, path: Path) -> None:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{path.name}"'
            "\r\nContent-Type: image/jpeg\r\n\r\n"
        ).encode()
        + path.read_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    request = urllib.request.Request(
        url, body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    with urllib.request.urlopen(request, timeout=600) as response:
        assert "overlay" in json.loads(response.read())


def check_serve(folder: Path, requests: int, clients: int) -> None:
    server = subprocess.Popen(
        [*CLIPFUSE, "serve", "--model", str(folder / "model"), "--port", "0", "--device", "cpu"],
        stdout=subprocess.PIPE,
        text=True,
    )

    def rss() -> float:
        status = Path(f"/proc/{server.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024

    try:
        port = re.search(r"127\.0\.0\.1:(\d+)/", server.stdout.readline()).group(1)
        url = f"http://127.0.0.1:{port}/api/predict"
        draw = random.Random(0)
        photos = [folder / f"photo_{w}x{h}.jpg" for w, h in SERVED]
        order = [draw.choice(photos) for _ in range(requests)]
        idle, after = rss(), []
        started = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            for first in range(0, requests, clients):
                batch = order[first : first + clients]
                list(pool.map(lambda path: upload(url, path), batch))
                after += [rss()] * len(batch)
        seconds = time.perf_counter() - started
    finally:
        server.terminate()
        server.wait(timeout=60)
    at_50 = after[min(50, requests) - 1]
    print(
        f"clipfuse serve, {requests} uploads, {clients} at a time, {seconds:.0f} s: resident "
        f"{idle:.0f} MiB idle, {after[0]:.0f} after the first upload, {at_50:.0f} after 50, "
        f"{after[-1]:.0f} after {requests} ({100 * (after[-1] - at_50) / at_50:+.1f}%), "
        f"at most {max(after[49:]):.0f} after the first 50"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("check", choices=["predict", "serve"])
    parser.add_argument("--folder", type=Path, required=True, help="model and photos")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--clients", type=int, default=3, help="uploads at a time")
    args = parser.parse_args()
    args.folder.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    prepare(args.folder)
    if args.check == "predict":
        check_predict(args.folder)
    else:
        check_serve(args.folder, args.requests, args.clients)


if __name__ == "__main__":
    main()
