"""`workbench serve MODEL_DIR`: serve an exported model over HTTP with TF Serving's REST API.

The model is located, vetted and opened as `workbench predict` does (`workbench.serving.server.model`); the
application is `workbench.serving.server.app`, run by uvicorn on a socket bound here first, so a port that is
taken is a usage error (exit 2) before anything else starts, and `--port 0` prints the port the system chose.
"""

from __future__ import annotations

import argparse
import sys

# TF Serving's REST port: a client configured for TF Serving on this machine finds the server unchanged.
DEFAULT_PORT = 8501
DEFAULT_HOST = "127.0.0.1"
# The largest request body: a 12-megapixel JPEG is 3-8 MB, and base64 in JSON adds a third.
DEFAULT_MAX_BODY_MB = 20.0
DEFAULT_MAX_BATCH = 32
DEFAULT_MAX_LATENCY_MS = 2.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model",
        metavar="MODEL_DIR",
        help="run directory, SavedModel directory (saved_models/<name>[/<version>]), .keras or .tflite",
    )
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}, TF Serving's; 0: any free one)"
    )
    parser.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"address to bind (default {DEFAULT_HOST}: this machine only; 0.0.0.0 exposes the model, unauthenticated)",
    )
    parser.add_argument(
        "--name", default=None, help="model name in the URLs /v1/models/<name> (default: the export folder's name)"
    )
    parser.add_argument(
        "--max-body-mb",
        type=float,
        default=DEFAULT_MAX_BODY_MB,
        help=f"largest request body in MB; larger ones get 413 (default {DEFAULT_MAX_BODY_MB:g})",
    )
    parser.add_argument(
        "--max-batch",
        type=int,
        default=DEFAULT_MAX_BATCH,
        help=f"most images per model call of the dynamic batcher (default {DEFAULT_MAX_BATCH})",
    )
    parser.add_argument(
        "--max-latency-ms",
        type=float,
        default=DEFAULT_MAX_LATENCY_MS,
        help="longest a request waits for others to fill its batch, in milliseconds "
        f"(default {DEFAULT_MAX_LATENCY_MS:g}; 0: batch only what is already queued)",
    )
    parser.add_argument("--access-log", action="store_true", help="log every request (uvicorn's access log)")


def check_arguments(args: argparse.Namespace) -> None:
    """Refuse option values that cannot work, before the model is loaded (ValueError: exit 2)."""
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port {args.port}: use a port from 1 to 65535, or 0 for any free one")
    if not args.max_body_mb > 0:
        raise ValueError(f"--max-body-mb {args.max_body_mb:g}: the body limit must be more than 0 MB")
    if args.max_batch < 1:
        raise ValueError(f"--max-batch {args.max_batch}: a batch holds at least 1 image")
    if not args.max_latency_ms >= 0:
        raise ValueError(f"--max-latency-ms {args.max_latency_ms:g}: use 0 or more milliseconds")
    if args.name is not None:
        from workbench.serving.server.model import check_name

        check_name(args.name)


def bind(host: str, port: int):
    """A listening TCP socket on `host:port` (IPv4 or IPv6, as `host` resolves); OSError naming the fix."""
    import socket

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as error:
        raise OSError(
            f"--host {host}: cannot resolve it ({error.strerror}); use an IP address such as 127.0.0.1"
        ) from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as error:
        sock.close()
        raise OSError(
            f"cannot listen on {host}:{port} ({error.strerror}); choose another --port (0: any free one), "
            "or stop what is using it"
        ) from None
    return sock


def exposure_warning(host: str) -> str | None:
    """The warning printed when `host` is reachable from other machines; None for a loopback address."""
    from apps.serving import is_loopback

    if is_loopback(host):
        return None
    return (
        f"workbench serve: warning: listening on {host}, reachable from other machines; the server has no "
        "authentication or TLS: put it behind a reverse proxy that has them, or bind 127.0.0.1"
    )


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from workbench.serving.server.app import create_app
    from workbench.serving.server.model import ServedModel

    check_arguments(args)
    # Bound before the (slow) model load: a taken port fails at once. A client that connects while the model
    # loads waits in the listen backlog and is answered once the server starts.
    sock = bind(args.host, args.port)
    try:
        model = ServedModel.load(args.model, name=args.name)
    except BaseException:
        sock.close()
        raise
    host, port = sock.getsockname()[:2]
    if warning := exposure_warning(args.host):
        print(warning, file=sys.stderr)
    app = create_app(
        model,
        max_body_bytes=int(args.max_body_mb * 2**20),
        max_batch=args.max_batch,
        max_latency=args.max_latency_ms / 1000,
    )
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
    print(
        f"workbench serve: {model.location.path} ({model.format}, {len(model.labels)} classes) as {model.name!r} "
        f"version {model.version} on {url}\n"
        f"  POST {url}/v1/models/{model.name}:predict  (TF Serving REST)\n"
        f"  POST {url}/predict  (multipart field 'file')\n"
        f"  GET  {url}/healthz, {url}/metrics; Ctrl-C stops",
        flush=True,
    )
    config = uvicorn.Config(app, log_level="warning", access_log=args.access_log, lifespan="on", http="h11")
    uvicorn.Server(config).run(sockets=[sock])
    return 0
