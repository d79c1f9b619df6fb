"""TF Serving's REST API, the part a workbench model needs: predict request and response bodies, model status.

Reference: https://www.tensorflow.org/tfx/serving/api_rest. The SavedModel's `serving_default` signature takes
one input, `image_bytes` (encoded images; the `_bytes` suffix is what makes TF Serving accept `{"b64": ...}`),
and has three outputs: `probabilities` (C floats), `class_index` (int) and `class_name` (string). So:

* row format: `{"instances": [{"b64": ...}, ...]}` (or `[{"image_bytes": {"b64": ...}}, ...]`) is answered
  `{"predictions": [{"probabilities": [...], "class_index": i, "class_name": "..."}, ...]}`, one object per
  instance because the signature has several outputs;
* columnar format: `{"inputs": [{"b64": ...}, ...]}` (or `{"inputs": {"image_bytes": [...]}}`) is answered
  `{"outputs": {"probabilities": [[...], ...], "class_index": [...], "class_name": [...]}}`;
* `GET /v1/models/<name>` is the model status, `GET /v1/models/<name>/metadata` the served signature;
* errors are `{"error": "..."}`, as TF Serving's.

Every served format answers with these outputs (a `.tflite` or `.keras` model's class index and name come from its
labels.txt), so a client written for the SavedModel under TF Serving works against any of them.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass

from workbench.serving.server.model import Answer, ImageInput

SIGNATURE = "serving_default"
INPUT = "image_bytes"
OUTPUTS = ("probabilities", "class_index", "class_name")
EXAMPLE = '{"instances": [{"b64": "<base64 of a JPEG/PNG file>"}]}'


class RequestError(ValueError):
    """A request the server refuses: `status` is its HTTP status, `reason` its metrics label."""

    def __init__(self, message: str, status: int = 400, reason: str = "bad_request"):
        super().__init__(message)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class PredictRequest:
    images: list[ImageInput]
    columnar: bool  # the request used "inputs": answer with "outputs"


def parse_predict(body: bytes) -> PredictRequest:
    """The images of a TF Serving predict request body; `RequestError` naming what is wrong and the fix."""
    try:
        request = json.loads(body)
    except (ValueError, RecursionError) as error:  # UnicodeDecodeError is a ValueError
        raise RequestError(f"the request body is not valid JSON ({_short(error)}); send {EXAMPLE}") from None
    if not isinstance(request, dict):
        raise RequestError(f"the request body must be a JSON object; send {EXAMPLE}")
    signature = request.get("signature_name", SIGNATURE)
    if signature != SIGNATURE:
        raise RequestError(
            f"signature_name {signature!r} is not served; this server serves {SIGNATURE!r} "
            f"({INPUT} → {', '.join(OUTPUTS)}): leave signature_name out or set it to {SIGNATURE!r}"
        )
    if ("instances" in request) == ("inputs" in request):
        raise RequestError(
            'the request must have exactly one of "instances" (row format) or "inputs" (columnar format); '
            f"send {EXAMPLE}"
        )
    columnar = "inputs" in request
    key = "inputs" if columnar else "instances"
    values = request[key]
    if columnar and isinstance(values, dict):  # {"inputs": {"image_bytes": [...]}}
        values = _named(values, f'"{key}"')
    if not isinstance(values, list) or not values:
        raise RequestError(f'"{key}" must be a non-empty list of images; send {EXAMPLE}')
    images = []
    for i, value in enumerate(values):
        source = f"{key}[{i}]"
        if isinstance(value, dict) and "b64" not in value:  # a named input: {"image_bytes": {"b64": ...}}
            value = _named(value, source)
        images.append(ImageInput(source, _decode_b64(value, source)))
    return PredictRequest(images, columnar)


def _named(value: dict, where: str):
    if set(value) != {INPUT}:
        raise RequestError(
            f"{where}: names the inputs {sorted(value)}, but the signature has one input, {INPUT!r}; "
            f'send {{"{INPUT}": {{"b64": ...}}}} or just {{"b64": ...}}'
        )
    return value[INPUT]


def _decode_b64(value, source: str) -> bytes:
    if not (isinstance(value, dict) and set(value) == {"b64"} and isinstance(value["b64"], str)):
        raise RequestError(
            f'{source}: expected {{"b64": "<base64 of the image file>"}}; images are binary, so TF Serving\'s '
            'REST API sends them base64-encoded in a "b64" object'
        )
    text = "".join(value["b64"].split())  # line breaks of MIME-style base64 are not data
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        try:  # the URL-safe alphabet ('-' and '_'), which some clients send
            return base64.b64decode(text, altchars=b"-_", validate=True)
        except (binascii.Error, ValueError):
            raise RequestError(
                f"{source}: the b64 value is not valid base64; encode the image file's bytes with base64 "
                "(Python: base64.b64encode(data).decode())"
            ) from None


def predict_response(answers: Sequence[Answer], labels: Sequence[str], columnar: bool) -> dict:
    """TF Serving's answer for the signature's three outputs, from the model's answer for each image (the class
    index is the graph's own: its first maximum, or -1 and "unknown" where a calibrated model rejects)."""
    from workbench.serving.predict import answer

    probabilities = [a.probabilities.tolist() for a in answers]
    indices = [a.index for a in answers]
    names = [answer(i, labels)["class_name"] for i in indices]
    if columnar:
        return {"outputs": {"probabilities": probabilities, "class_index": indices, "class_name": names}}
    return {
        "predictions": [
            {"probabilities": p, "class_index": i, "class_name": n}
            for p, i, n in zip(probabilities, indices, names, strict=True)
        ]
    }


def status_response(version: int) -> dict:
    """TF Serving's GetModelStatus answer: the one version this server holds, loaded and serving."""
    return {
        "model_version_status": [
            {"version": str(version), "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        ]
    }


def metadata_response(name: str, version: int, classes: int) -> dict:
    """TF Serving's GetModelMetadata answer: the signature this server serves, in TF Serving's JSON form of a
    SignatureDef (dtypes, shapes with -1 for the batch, the predict method), whatever the model file's format."""

    def tensor(dtype: str, *dims: int) -> dict:
        shape = {"dim": [{"size": str(d), "name": ""} for d in dims], "unknown_rank": False}
        return {"dtype": dtype, "tensor_shape": shape}

    signature = {
        "inputs": {INPUT: tensor("DT_STRING", -1)},
        "outputs": {
            "probabilities": tensor("DT_FLOAT", -1, classes),
            "class_index": tensor("DT_INT32", -1),
            "class_name": tensor("DT_STRING", -1),
        },
        "method_name": "tensorflow/serving/predict",
        "defaults": {},
    }
    return {
        "model_spec": {"name": name, "signature_name": "", "version": str(version)},
        "metadata": {"signature_def": {"signature_def": {SIGNATURE: signature}}},
    }


def _short(error: Exception, limit: int = 200) -> str:
    text = str(error)
    return text if len(text) <= limit else text[:limit] + "..."
