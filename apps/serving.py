"""Who may reach the app: this machine only, unless the user opts in (issue 11, A7).

The app has no authentication, and it can read any folder on the server, start training jobs and take
500 MB uploads, so it serves this machine only:

* the listening address must be a loopback address. `workbench app` passes `localhost` from
  `.streamlit/config.toml`, but Streamlit reads that file only from the directory it is started in, so
  `streamlit run apps/workbench_app.py` from anywhere else listens on every interface;
* the browser's `Host` header must name this machine. A page on another site can point its own DNS name
  at 127.0.0.1 (DNS rebinding) and then talk to the app as if it were that site; Streamlit does not
  check `Host`, so the app does.

`WORKBENCH_ALLOW_REMOTE=1` (set by `workbench app --address ...`) lifts both checks, for a deliberate
exposure, which belongs behind a reverse proxy that authenticates users and checks `Host`.

No Streamlit import here: `workbench app` reads `ALLOW_REMOTE_ENV` without loading Streamlit.
"""

from __future__ import annotations

import ipaddress
import os

ALLOW_REMOTE_ENV = "WORKBENCH_ALLOW_REMOTE"


def remote_allowed(environ: dict[str, str] | None = None) -> bool:
    """Whether the user opted in to serving beyond this machine (`WORKBENCH_ALLOW_REMOTE=1`)."""
    value = (os.environ if environ is None else environ).get(ALLOW_REMOTE_ENV, "")
    return value.strip().lower() in ("1", "true", "yes")


def is_loopback(host: str | None) -> bool:
    """`localhost`, `127.x.x.x`, `::1` (bracketed or not); False for names that could resolve anywhere."""
    if not host:
        return False
    host = host.strip().strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_name(host_header: str) -> str:
    """The name in a `Host` header without its port: `localhost:8501` -> `localhost`, `[::1]:8501` -> `::1`."""
    host = host_header.strip()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host[1:]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def serving_problem(address: str | None, host_header: str | None, *, allow_remote: bool) -> str | None:
    """Why this page must not be served, or None when it may be.

    `address` is Streamlit's `server.address` (None or empty: every interface); `host_header` is the
    request's `Host` (None when there is no HTTP request, as under Streamlit's AppTest, where nothing
    is exposed).
    """
    if allow_remote or host_header is None:
        return None
    if not is_loopback(address):
        where = f"address {address!r}" if address else "every network interface"
        return (
            f"The workbench app is listening on {where}, so anyone who can reach this machine could use it, "
            "and it has no login. It serves this machine only: start it with `workbench app` (which binds "
            "localhost from any directory), or pass `--server.address localhost` to `streamlit run`. To "
            f"expose it on purpose, set {ALLOW_REMOTE_ENV}=1 and put it behind a reverse proxy that "
            "authenticates users."
        )
    if not is_loopback(host_name(host_header)):
        return (
            f"This page was requested as {host_name(host_header)!r}, not as localhost. The app answers only "
            "requests addressed to this machine (a page on another site can rename 127.0.0.1 to reach it: DNS "
            f"rebinding). Open http://localhost instead, or set {ALLOW_REMOTE_ENV}=1 when a reverse proxy "
            "that authenticates users serves it under another name."
        )
    return None
