"""`workbench serve`: TF Serving's REST API over a real HTTP server, the same answers as `workbench predict`,
correct under concurrent clients, and a clear 4xx for bad input after which it keeps serving.

One server subprocess serves the tiny run's SavedModel for the whole module (started once, on a free loopback
port); the TFLite export is served in this process, by uvicorn in a thread, because a second TensorFlow
import would cost more than the test.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import struct
import subprocess
import sys
import threading
import time
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers_tiny_run import exported, split_images

from workbench.serving.predict import predict

ROOT = Path(__file__).resolve().parents[1]
NAME = "tiny"
START_TIMEOUT = 180  # s: TensorFlow's import and the model load on a busy 2-core machine
PARITY = 1e-5


@dataclass
class Server:
    host: str
    port: int

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        """(status, parsed JSON or text, content type) of one request on a fresh connection."""
        connection = http.client.HTTPConnection(self.host, self.port, timeout=60)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            return _read(connection.getresponse())
        finally:
            connection.close()

    def tf_predict(self, request: dict, name: str = NAME):
        body = json.dumps(request).encode()
        return self.request("POST", f"/v1/models/{name}:predict", body, {"Content-Type": "application/json"})

    def upload(self, data: bytes, filename: str = "image.jpg", query: str = ""):
        body, content_type = multipart("file", filename, data)
        return self.request("POST", f"/predict{query}", body, {"Content-Type": content_type})


def _read(response: http.client.HTTPResponse):
    raw = response.read()
    content_type = response.getheader("Content-Type", "")
    payload = json.loads(raw) if content_type.startswith("application/json") else raw.decode()
    return response.status, payload, content_type


def multipart(field: str, filename: str, data: bytes) -> tuple[bytes, str]:
    """A multipart/form-data body holding one file, and its Content-Type (what `curl -F` sends)."""
    boundary = uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def b64(data: bytes) -> dict:
    return {"b64": base64.b64encode(data).decode()}


def png_header(width: int, height: int) -> bytes:
    """A valid PNG whose header claims width x height RGB pixels, with almost no data: a decompression bomb."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


def start_subprocess(model: Path, log: Path, *extra: str) -> Iterator[Server]:
    """`workbench serve MODEL --port 0` in a child process; yields once /healthz answers, stops it afterwards."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "workbench", "serve", str(model), "--port", "0", "--name", NAME, *extra]
    with log.open("w") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env, cwd=ROOT)
    try:
        server = _wait_for_url(process, log)
        deadline = time.monotonic() + START_TIMEOUT
        while True:  # the socket listens before uvicorn answers: wait for the health check itself
            try:
                if server.request("GET", "/healthz")[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                pytest.fail(f"the server never became healthy; its stderr:\n{log.read_text()}")
            time.sleep(0.2)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_for_url(process: subprocess.Popen, log: Path) -> Server:
    """The host and port from the server's first line (`... on http://127.0.0.1:PORT`), read with a timeout."""
    found: list[str] = []
    reader = threading.Thread(target=lambda: found.append(process.stdout.readline()), daemon=True)
    reader.start()
    reader.join(START_TIMEOUT)
    match = re.search(r"http://([0-9.]+):(\d+)", found[0] if found else "")
    if match is None:
        process.kill()
        pytest.fail(f"the server printed no URL; stdout {found!r}, stderr:\n{log.read_text()}")
    return Server(match.group(1), int(match.group(2)))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return exported(tmp_path_factory, "savedmodel")


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory) -> Iterator[Server]:
    yield from start_subprocess(model_dir, tmp_path_factory.mktemp("serve") / "stderr.txt")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[str]:
    return split_images(tmp_path_factory)[:4]


@pytest.fixture(scope="module")
def reference(model_dir, images) -> list[dict]:
    """`workbench predict`'s answer for the images, every class listed."""
    return predict(model_dir, images, top_k=3)


def assert_matches(probabilities: list[float], class_name: str, expected: dict) -> None:
    """A TF Serving prediction (probabilities by class index, top class name) equals `predict`'s result."""
    assert class_name == expected["predictions"][0]["class"]
    for entry in expected["predictions"]:
        assert probabilities[entry["index"]] == pytest.approx(entry["probability"], abs=PARITY)


def assert_serving(server: Server, image: str, expected: dict) -> None:
    """A correct answer right now: the check after every refusal that the server keeps serving."""
    status, body, _ = server.tf_predict({"instances": [b64(Path(image).read_bytes())]})
    assert status == 200, body
    assert_matches(body["predictions"][0]["probabilities"], body["predictions"][0]["class_name"], expected)


# ------------------------------------------------------------------------------------------------- the API
def test_status_and_health(server, model_dir):
    status, body, content_type = server.request("GET", f"/v1/models/{NAME}")
    assert status == 200 and content_type.startswith("application/json")
    assert body == {
        "model_version_status": [
            {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        ]
    }
    assert server.request("GET", f"/v1/models/{NAME}/versions/1")[:2] == (200, body)
    status, body, _ = server.request("GET", f"/v1/models/{NAME}/versions/7")
    assert status == 404 and "version '7'" in body["error"]
    status, body, _ = server.request("GET", "/healthz")
    assert status == 200 and body["status"] == "ok" and body["name"] == NAME and body["format"] == "savedmodel"
    status, body, _ = server.request("GET", f"/v1/models/{NAME}/metadata")
    assert status == 200 and body["model_spec"] == {"name": NAME, "signature_name": "", "version": "1"}
    signature = body["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert _dtypes_and_shapes(signature) == _dtypes_and_shapes(_saved_signature(model_dir))
    status, body, _ = server.request("GET", "/")
    assert status == 200 and body["model"]["name"] == NAME and f"/v1/models/{NAME}:predict" in json.dumps(body)


def _saved_signature(model_dir: Path) -> dict:
    """The SavedModel's own serving_default SignatureDef, as TF Serving writes it in JSON."""
    from google.protobuf.json_format import MessageToDict
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((model_dir / "saved_model.pb").read_bytes())
    return MessageToDict(saved.meta_graphs[0].signature_def["serving_default"], preserving_proto_field_name=True)


def _dtypes_and_shapes(signature: dict) -> dict:
    return {
        side: {key: (t["dtype"], [d["size"] for d in t["tensor_shape"]["dim"]]) for key, t in signature[side].items()}
        for side in ("inputs", "outputs")
    } | {"method_name": signature["method_name"]}


def test_tf_serving_predict_is_workbench_predict(server, images, reference):
    """Row format: one object per instance with the signature's three outputs; columnar: one list per output."""
    instances = [b64(Path(image).read_bytes()) for image in images]
    status, body, _ = server.tf_predict({"instances": instances})
    assert status == 200, body
    assert list(body) == ["predictions"] and len(body["predictions"]) == len(images)
    for prediction, expected in zip(body["predictions"], reference, strict=True):
        assert set(prediction) == {"probabilities", "class_index", "class_name"}
        assert len(prediction["probabilities"]) == 3 and isinstance(prediction["class_index"], int)
        assert prediction["class_index"] == expected["predictions"][0]["index"]
        assert_matches(prediction["probabilities"], prediction["class_name"], expected)
    # A named input and an explicit signature, as TF Serving accepts them.
    named = {"signature_name": "serving_default", "instances": [{"image_bytes": instances[0]}]}
    status, body, _ = server.tf_predict(named)
    assert status == 200 and body["predictions"][0]["class_name"] == reference[0]["predictions"][0]["class"]
    status, body, _ = server.tf_predict({"inputs": {"image_bytes": instances}})
    assert status == 200 and set(body["outputs"]) == {"probabilities", "class_index", "class_name"}
    outputs = body["outputs"]
    for i, expected in enumerate(reference):
        assert_matches(outputs["probabilities"][i], outputs["class_name"][i], expected)
        assert outputs["class_index"][i] == expected["predictions"][0]["index"]


def test_multipart_predict_answers_like_predict_json(server, images, reference):
    status, body, _ = server.upload(Path(images[1]).read_bytes(), filename="photo.jpg", query="?top_k=2")
    assert status == 200, body
    assert body["image"] == "photo.jpg" and len(body["predictions"]) == 2
    for got, expected in zip(body["predictions"], reference[1]["predictions"][:2], strict=True):
        assert (got["class"], got["index"]) == (expected["class"], expected["index"])
        assert got["probability"] == pytest.approx(expected["probability"], abs=PARITY)
    # The raw image as the body (curl --data-binary @image.jpg); top_k defaults to every class here (3 < 5).
    status, body, _ = server.request("POST", "/predict", Path(images[1]).read_bytes())
    assert status == 200 and [p["class"] for p in body["predictions"]] == [
        p["class"] for p in reference[1]["predictions"]
    ]


def test_eight_clients_get_correct_answers(server, images, reference):
    """8 threads × 50 requests on kept-alive connections: every answer is the image's own (no latency asserted:
    bench_serve.py measures it)."""
    clients, per_client = 8, 50
    payloads = [json.dumps({"instances": [b64(Path(image).read_bytes())]}).encode() for image in images]
    failures: list[str] = []
    answered = [0] * clients

    def client(k: int) -> None:
        connection = http.client.HTTPConnection(server.host, server.port, timeout=120)
        try:
            for i in range(per_client):
                which = (k + i) % len(images)
                connection.request("POST", f"/v1/models/{NAME}:predict", payloads[which])
                status, body, _ = _read(connection.getresponse())
                if status != 200:
                    failures.append(f"client {k} request {i}: {status} {body}")
                    continue
                prediction = body["predictions"][0]
                try:
                    assert_matches(prediction["probabilities"], prediction["class_name"], reference[which])
                except AssertionError as error:
                    failures.append(f"client {k} request {i}: image {which}: {error}")
                answered[k] += 1
        except Exception as error:  # a dropped connection is a failure too, not a hung test
            failures.append(f"client {k}: {type(error).__name__}: {error}")
        finally:
            connection.close()

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not failures, failures[:5]
    assert answered == [per_client] * clients


# ---------------------------------------------------------------------------------------------- bad input
def _truncated(image: str) -> bytes:
    data = Path(image).read_bytes()
    return data[: len(data) // 2]  # the header (and its size) intact, the scan data cut


BAD_INPUTS = {
    # name: (request sender, expected status, words the error must contain)
    "not an image": (
        lambda s, img: s.upload(b"name,label\ncat,1\n", filename="notes.csv"),
        400,
        "notes.csv: not an image",
    ),
    "truncated JPEG": (lambda s, img: s.upload(_truncated(img), filename="cut.jpg"), 400, "cut.jpg: not an image"),
    "truncated JPEG beside a good one": (
        lambda s, img: s.tf_predict({"instances": [b64(Path(img).read_bytes()), b64(_truncated(img))]}),
        400,
        "instances[1]: not an image",
    ),
    "a JPEG signature and nothing else, beside a good image": (
        lambda s, img: s.tf_predict({"instances": [b64(Path(img).read_bytes()), b64(b"\xff\xd8\xff")]}),
        400,
        "instances[1]: not an image",
    ),
    "decompression bomb": (
        lambda s, img: s.tf_predict({"instances": [b64(png_header(20000, 20000))]}),
        400,
        "decompression bomb",
    ),
    "50 MB body": (
        lambda s, img: s.request("POST", "/predict", b"\0" * (50 * 2**20), {"Content-Type": "image/jpeg"}),
        413,
        "over the limit of 20 MB",
    ),
    "wrong JSON": (
        lambda s, img: s.request("POST", f"/v1/models/{NAME}:predict", b'{"instances": [', {}),
        400,
        "not valid JSON",
    ),
    "no instances": (lambda s, img: s.tf_predict({"examples": []}), 400, 'exactly one of "instances"'),
    "bad base64": (lambda s, img: s.tf_predict({"instances": [{"b64": "not*base64"}]}), 400, "not valid base64"),
    "a string, not b64": (lambda s, img: s.tf_predict({"instances": ["cat.jpg"]}), 400, '"b64"'),
    "unknown signature": (
        lambda s, img: s.tf_predict({"signature_name": "serving_rgb", "instances": [b64(b"x")]}),
        400,
        "'serving_rgb' is not served",
    ),
    "unknown model name": (
        lambda s, img: s.tf_predict({"instances": [b64(Path(img).read_bytes())]}, name="resnet"),
        404,
        "model 'resnet' is not served",
    ),
    "no file field": (lambda s, img: s.request("POST", "/predict", *_form_without_file()), 400, "field 'file'"),
}


def _form_without_file() -> tuple[bytes, dict]:
    boundary = uuid.uuid4().hex
    body = f'--{boundary}\r\nContent-Disposition: form-data; name="note"\r\n\r\nhello\r\n--{boundary}--\r\n'.encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_gets_a_4xx_and_the_server_keeps_serving(server, images, reference, case):
    send, expected_status, words = BAD_INPUTS[case]
    status, body, content_type = send(server, images[0])
    assert status == expected_status, body
    assert content_type.startswith("application/json") and set(body) == {"error"}
    assert words in body["error"], body["error"]
    assert_serving(server, images[0], reference[0])


# ------------------------------------------------------------------------------------------------ metrics
def _sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample of the Prometheus text, 0 when absent."""
    wanted = ",".join(f'{key}="{value}"' for key, value in labels.items())
    pattern = re.escape(name + ("{" + wanted + "}" if wanted else "")) + r" (\S+)$"
    match = re.search(pattern, text, flags=re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def test_metrics_count_requests_errors_latency_and_batches(server, images):
    route = "/v1/models/{name}:predict"
    labels = {"route": route, "method": "POST"}
    before = server.request("GET", "/metrics")[1]
    payload = {"instances": [b64(Path(image).read_bytes()) for image in images[:2]]}
    for _ in range(3):
        assert server.tf_predict(payload)[0] == 200
    assert server.tf_predict({"instances": [{"b64": "%%"}]})[0] == 400
    status, after, content_type = server.request("GET", "/metrics")
    assert status == 200 and content_type.startswith("text/plain; version=0.0.4")
    requests = "workbench_serve_requests_total"
    assert _sample(after, requests, **labels, status="200") - _sample(before, requests, **labels, status="200") == 3
    assert _sample(after, requests, **labels, status="400") - _sample(before, requests, **labels, status="400") == 1
    errors = "workbench_serve_errors_total"
    assert (
        _sample(after, errors, route=route, reason="bad_request")
        - _sample(before, errors, route=route, reason="bad_request")
        == 1
    )
    latency = "workbench_serve_request_duration_seconds"
    count = _sample(after, f"{latency}_count", route=route)
    assert count >= 4 and _sample(after, f"{latency}_bucket", route=route, le="+Inf") == count
    # Every image of the three good requests went through the batcher: 6 more images in the batch histogram.
    images_batched = _sample(after, "workbench_serve_batch_size_sum") - _sample(
        before, "workbench_serve_batch_size_sum"
    )
    assert images_batched == 6
    assert "# TYPE workbench_serve_batch_size histogram" in after
    assert f'workbench_serve_model_info{{name="{NAME}",version="1",format="savedmodel"}} 1' in after


# ---------------------------------------------------------------------------------------- the command line
def test_cli_refuses_bad_options_and_models_with_exit_2(tmp_path, capsys):
    from workbench.cli import main

    assert main(["serve", str(tmp_path / "missing"), "--port", "0"]) == 2
    assert "missing: no such file or directory" in capsys.readouterr().err
    assert main(["serve", str(tmp_path), "--port", "70000"]) == 2
    assert "--port 70000" in capsys.readouterr().err
    assert main(["serve", str(tmp_path), "--max-batch", "0"]) == 2
    assert main(["serve", str(tmp_path), "--name", "a/b"]) == 2
    assert "--name 'a/b'" in capsys.readouterr().err


def test_a_taken_port_is_a_usage_error(tmp_path, capsys):
    import socket

    from workbench.cli import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", str(tmp_path), "--port", str(port)]) == 2
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


def test_only_loopback_binds_without_a_warning():
    from workbench.commands.serve import DEFAULT_HOST, exposure_warning

    assert DEFAULT_HOST == "127.0.0.1"
    for host in ("127.0.0.1", "localhost", "::1"):
        assert exposure_warning(host) is None
    for host in ("0.0.0.0", "192.168.1.20", "::"):
        assert "reachable from other machines" in exposure_warning(host)


# ---------------------------------------------------------------------------------------------- TFLite
def test_tflite_is_served_with_the_same_api(tmp_path_factory, images):
    """The TFLite export through the same app (in this process: LiteRT opens it in a fraction of a second)."""
    import socket

    import uvicorn

    from workbench.serving.server.app import create_app
    from workbench.serving.server.model import ServedModel

    model_path = exported(tmp_path_factory, "tflite")
    expected = predict(model_path, images[:2], top_k=3)
    app = create_app(ServedModel.load(model_path, name=NAME), max_body_bytes=2**20, max_batch=4)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    uv = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        server = Server("127.0.0.1", sock.getsockname()[1])
        deadline = time.monotonic() + 30
        while not uv.started:
            assert time.monotonic() < deadline and thread.is_alive(), "the in-process server did not start"
            time.sleep(0.05)
        status, body, _ = server.tf_predict({"instances": [b64(Path(image).read_bytes()) for image in images[:2]]})
        assert status == 200, body
        for prediction, reference in zip(body["predictions"], expected, strict=True):
            assert_matches(prediction["probabilities"], prediction["class_name"], reference)
        assert server.upload(_truncated(images[0]), filename="cut.jpg")[0] == 400
        status, body, _ = server.request("GET", "/healthz")
        assert status == 200 and body["format"] == "tflite"
    finally:
        uv.should_exit = True
        thread.join(timeout=30)
        sock.close()


# ------------------------------------------------------------------------------------------- the batcher
def _batched(run_batch, items, max_batch: int, max_latency: float = 0.05) -> list:
    """Submit `items` at once to a `DynamicBatcher` over `run_batch`; each item's result or exception."""
    import asyncio

    from workbench.serving.server.batcher import DynamicBatcher

    async def main():
        batcher = DynamicBatcher(run_batch, max_batch=max_batch, max_latency=max_latency)
        await batcher.start()
        try:
            return await asyncio.gather(*(batcher.submit(item) for item in items), return_exceptions=True)
        finally:
            await batcher.stop()

    return asyncio.run(main())


def test_batcher_fills_batches_up_to_max_batch_and_keeps_order():
    sizes: list[int] = []

    def square(items):
        sizes.append(len(items))
        return [x * x for x in items]

    assert _batched(square, list(range(10)), max_batch=4) == [x * x for x in range(10)]
    assert sizes == [4, 4, 2]  # all ten queued within the first batch's wait


def test_batcher_fails_only_the_items_refused_and_survives_a_failed_batch():
    def odd_refused(items):
        return [ValueError(f"item {x} refused") if x % 2 else x for x in items]

    results = _batched(odd_refused, list(range(6)), max_batch=8)
    assert results[0::2] == [0, 2, 4] and all(isinstance(r, ValueError) for r in results[1::2])
    calls = []

    def fails_once(items):
        calls.append(len(items))
        if len(calls) == 1:
            raise RuntimeError("out of memory")
        return items

    results = _batched(fails_once, [1, 2, 3], max_batch=2)  # batches [1, 2] (failed) and [3]
    assert [type(r) for r in results[:2]] == [RuntimeError, RuntimeError] and results[2] == 3
