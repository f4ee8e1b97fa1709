"""Rounds of 4 concurrent ``POST /api/predict`` to ``clipfuse serve``'s app (in process), with
one prediction thread (what the server does) or a pool of WORKERS threads: each request's
latency, each round's wall time and the process's RSS, as one JSON line.

Usage: python tools/measure_serve_queue.py MODEL IMAGE WORKERS
"""

import asyncio
import functools
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

import clipfuse
import clipfuse.inference.serve as serve


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmRSS"))
    return int(line.split()[1]) / 1024


async def measure(app, data: bytes, rounds: int = 4, concurrent: int = 4) -> dict:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://serve", timeout=600) as c:

        async def one() -> float:
            started = time.perf_counter()
            answer = await c.post("/api/predict", files={"image": ("image", data)})
            assert answer.status_code == 200, answer.text
            return time.perf_counter() - started

        await one()  # warm-up
        result = {"rss_after_warmup_mib": round(rss_mib()), "rounds": []}
        for _ in range(rounds):
            started = time.perf_counter()
            latencies = await asyncio.gather(*[one() for _ in range(concurrent)])
            result["rounds"].append(
                {
                    "wall_s": round(time.perf_counter() - started, 2),
                    "latency_s": sorted(round(s, 2) for s in latencies),
                    "rss_mib": round(rss_mib()),
                }
            )
        return result


def main() -> None:
    model_path, image, workers = sys.argv[1], sys.argv[2], int(sys.argv[3])
    serve.ThreadPoolExecutor = functools.partial(ThreadPoolExecutor, max_workers=workers)
    app = serve.create_app(clipfuse.load(model_path, device="cpu"), queue=8)
    with open(image, "rb") as file:
        result = asyncio.run(measure(app, file.read()))
    print(json.dumps({"workers": workers, **result}))


if __name__ == "__main__":
    main()
