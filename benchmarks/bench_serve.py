"""`workbench serve` throughput and latency at 1 and 8 concurrent clients, against calling the model in-process.

    python benchmarks/bench_serve.py [--variant lite0] [--requests 120] [--clients 1 8] [--json FILE]

What it does:
1. Builds the variant at its own resolution (random weights: speed does not depend on them) with 5 classes and
   writes it as `workbench export` writes a SavedModel (`write_saved_model`, TF Serving's layout, labels.txt).
2. Makes JPEGs as a client would send them: the embedded sample's images upscaled to 320-640 px per side.
3. Baseline, in this process: the same SavedModel opened by `workbench.serving.predict.open_model`, called
   one image at a time (`Runtime.predict_bytes([jpeg])`), each call timed. Measured before and after the
   server runs; the ratios use the mean of the two throughputs (the machine is shared, the load drifts).
4. `workbench serve` in a child process on a free loopback port, default batching; for each client count,
   that many threads send TF Serving predict requests (`{"instances": [{"b64": ...}]}`, one image each) on
   kept-alive connections, `--requests` in all, and every latency is recorded. Then the same with the
   batcher off (`--max-batch 1`) at the highest client count: what batching buys.

Reported: images/s, p50 and p99 latency (ms) per configuration, each throughput as a ratio to the in-process
baseline, the batcher's mean batch, the in-process throughput in batches of the highest client count (what
batching can give at most on this machine, without HTTP), and the machine. The clients run in this process and share its CPUs with the server, as a sidecar
client would.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from _machine import cpu_model

ROOT = Path(__file__).resolve().parents[1]
NAME = "bench"
CLASSES = 5


def make_jpegs(count: int, seed: int = 0) -> list[bytes]:
    """`count` JPEGs (quality 90) of the embedded sample's images upscaled to random sizes, 320-640 px a side."""
    import io

    from PIL import Image

    from pipelines import sample_dataset_path

    rng = np.random.default_rng(seed)
    sources = sorted(p for p in Path(sample_dataset_path()).rglob("*.png"))
    out = []
    for i in range(count):
        width, height = (int(v) for v in rng.integers(320, 641, 2))
        buffer = io.BytesIO()
        with Image.open(sources[i % len(sources)]) as image:
            image.convert("RGB").resize((width, height), Image.BICUBIC).save(buffer, format="JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def summary(latencies: list[float], wall: float) -> dict:
    ms = np.array(latencies) * 1000
    return {
        "images_per_s": round(len(latencies) / wall, 2),
        "p50_ms": round(float(np.percentile(ms, 50)), 1),
        "p99_ms": round(float(np.percentile(ms, 99)), 1),
        "requests": len(latencies),
    }


def in_process(runtime, jpegs: list[bytes], count: int) -> dict:
    """The baseline: one image per call of the loaded model, `count` calls after two warm-up calls."""
    for data in jpegs[:2]:
        runtime.predict_bytes([data])
    latencies = []
    started = time.perf_counter()
    for i in range(count):
        t = time.perf_counter()
        runtime.predict_bytes([jpegs[i % len(jpegs)]])
        latencies.append(time.perf_counter() - t)
    return summary(latencies, time.perf_counter() - started)


def in_process_batched(runtime, jpegs: list[bytes], count: int, batch: int) -> dict:
    """What batching alone gives in this process: `count` images in calls of `batch` (throughput only)."""
    runtime.predict_bytes(jpegs[:batch])
    started = time.perf_counter()
    for i in range(0, count, batch):
        runtime.predict_bytes([jpegs[(i + j) % len(jpegs)] for j in range(batch)])
    return {"images_per_s": round(count / (time.perf_counter() - started), 2), "batch": batch}


def start_server(model_dir: Path, log: Path, *extra: str) -> tuple[subprocess.Popen, str, int]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "workbench", "serve", str(model_dir), "--port", "0", "--name", NAME, *extra]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log.open("w"), text=True, env=env, cwd=ROOT)
    match = re.search(r"http://([0-9.]+):(\d+)", process.stdout.readline())
    if match is None:
        process.kill()
        raise SystemExit(f"the server did not start; its stderr:\n{log.read_text()}")
    host, port = match.group(1), int(match.group(2))
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection(host, port, timeout=10)
            connection.request("GET", "/healthz")
            if connection.getresponse().status == 200:
                return process, host, port
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit(f"the server never became healthy; its stderr:\n{log.read_text()}")


def over_http(host: str, port: int, jpegs: list[bytes], clients: int, total: int) -> dict:
    """`clients` threads sending `total` one-image predict requests between them; every answer is checked."""
    bodies = [json.dumps({"instances": [{"b64": base64.b64encode(d).decode()}]}).encode() for d in jpegs]
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors: list[str] = []
    per_client = total // clients

    def client(k: int) -> None:
        connection = http.client.HTTPConnection(host, port, timeout=300)
        for i in range(per_client):
            body = bodies[(k * per_client + i) % len(bodies)]
            t = time.perf_counter()
            connection.request("POST", f"/v1/models/{NAME}:predict", body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            answer = response.read()
            latencies[k].append(time.perf_counter() - t)
            if response.status != 200 or len(json.loads(answer)["predictions"]) != 1:
                errors.append(f"{response.status} {answer[:200]!r}")
        connection.close()

    warm = http.client.HTTPConnection(host, port, timeout=300)  # the first request of a connection, not timed
    warm.request("POST", f"/v1/models/{NAME}:predict", bodies[0])
    warm.getresponse().read()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    if errors:
        raise SystemExit(f"{len(errors)} requests failed, e.g. {errors[0]}")
    return summary([x for client_latencies in latencies for x in client_latencies], wall)


def batch_totals(host: str, port: int) -> tuple[float, float]:
    """(model calls, images) of the server's batch-size histogram so far, from /metrics."""
    connection = http.client.HTTPConnection(host, port, timeout=30)
    connection.request("GET", "/metrics")
    text = connection.getresponse().read().decode()
    count = float(re.search(r"^workbench_serve_batch_size_count (\S+)$", text, re.M).group(1))
    total = float(re.search(r"^workbench_serve_batch_size_sum (\S+)$", text, re.M).group(1))
    return count, total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="lite0", help="EfficientNet variant (default lite0, 224 px)")
    parser.add_argument("--requests", type=int, default=120, help="requests per configuration (default 120)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8], help="concurrent clients (default 1 8)")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args()

    import keras
    import tensorflow as tf

    from workbench.models import build_model
    from workbench.models.registry import get_variant
    from workbench.serving.formats.savedmodel import write_saved_model
    from workbench.serving.model_files import locate_model
    from workbench.serving.predict import open_model

    started = time.time()
    resolution = get_variant(args.variant).resolution
    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    model_dir = work / NAME / "1"
    keras.utils.set_random_seed(0)
    model = build_model(args.variant, num_classes=CLASSES, weights=None)
    write_saved_model(model, [f"class{i}" for i in range(CLASSES)], resolution, model_dir)
    (model_dir / "labels.txt").write_text("".join(f"class{i}\n" for i in range(CLASSES)))
    del model
    jpegs = make_jpegs(48)
    print(f"{args.variant} at {resolution} px written in {time.time() - started:.0f} s", flush=True)

    runtime, _ = open_model(locate_model(model_dir))
    results: dict[str, dict] = {"in_process_before": in_process(runtime, jpegs, args.requests)}
    print("in-process:", results["in_process_before"], flush=True)
    for label, extra in (("batched", ()), ("unbatched", ("--max-batch", "1"))):
        process, host, port = start_server(model_dir, work / f"server-{label}.log", *extra)
        try:
            counts = args.clients if label == "batched" else [max(args.clients)]
            for clients in counts:
                key = f"http_{label}_{clients}_clients"
                calls, images = batch_totals(host, port)
                results[key] = over_http(host, port, jpegs, clients, args.requests)
                calls_after, images_after = batch_totals(host, port)  # includes the one warm-up request
                results[key]["mean_batch"] = round((images_after - images) / max(calls_after - calls, 1), 2)
                print(f"{key}:", results[key], flush=True)
        finally:
            process.terminate()
            process.wait(timeout=60)
    results["in_process_after"] = in_process(runtime, jpegs, args.requests)
    print("in-process again:", results["in_process_after"], flush=True)
    ceiling = in_process_batched(runtime, jpegs, args.requests, max(args.clients))
    print("in-process, batched:", ceiling, flush=True)

    baseline = statistics.mean(results[k]["images_per_s"] for k in ("in_process_before", "in_process_after"))
    report = {
        "machine": {
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "note": "shared machine: other processes were loading the CPU; clients run on the same cores",
        },
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
        "model": {"variant": args.variant, "resolution": resolution, "format": "savedmodel", "classes": CLASSES},
        "images": "JPEG q90, 320-640 px a side, one per request",
        "results": results,
        "in_process_batched": ceiling,
        "throughput_ratio_vs_in_process": {
            **{key: round(r["images_per_s"] / baseline, 2) for key, r in results.items() if key.startswith("http_")},
            f"in_process_batch_{ceiling['batch']}": round(ceiling["images_per_s"] / baseline, 2),
        },
        "wall_s": round(time.time() - started, 1),
    }
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
