"""Prometheus-style metrics of the server, written in the text exposition format by hand.

Four families, enough to watch a model server: requests by route and status, errors by route and reason,
request latency and batch size as histograms. `prometheus_client` would add a dependency for what is a
few counters; the format is simple and stable (https://prometheus.io/docs/instrumenting/exposition_formats/).
Routes are the route templates (`/v1/models/{name}:predict`), never raw paths, so a client cannot make the
label set grow without bound.
"""

from __future__ import annotations

import bisect
import threading
from collections import Counter
from dataclasses import dataclass, field

# Prometheus' default latency buckets (seconds).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Images per model call: powers of two up to the largest --max-batch anyone should need.
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PREFIX = "workbench_serve"


@dataclass
class Histogram:
    buckets: tuple[float, ...]
    counts: list[int] = field(default_factory=list)  # per bucket, not cumulative; the last one is +Inf
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.buckets) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1  # bucket `le` includes its bound
        self.total += value
        self.count += 1

    def lines(self, name: str, labels: dict[str, str]) -> list[str]:
        out, running = [], 0
        for bound, count in zip((*self.buckets, float("inf")), self.counts, strict=True):
            running += count
            le = "+Inf" if bound == float("inf") else _number(bound)
            out.append(f"{name}_bucket{_labels({**labels, 'le': le})} {running}")
        out.append(f"{name}_sum{_labels(labels)} {_number(self.total)}")
        out.append(f"{name}_count{_labels(labels)} {self.count}")
        return out


class Metrics:
    """Counters and histograms of one server, safe to update from the event loop and the model's thread."""

    def __init__(self, model_labels: dict[str, str]):
        self._lock = threading.Lock()
        self._model = model_labels
        self._requests: Counter[tuple[str, str, int]] = Counter()
        self._errors: Counter[tuple[str, str]] = Counter()
        self._latency: dict[str, Histogram] = {}
        self._batch = Histogram(BATCH_BUCKETS)

    def observe_request(self, route: str, method: str, status: int, seconds: float, reason: str | None) -> None:
        with self._lock:
            self._requests[route, method, status] += 1
            if status >= 400:
                self._errors[route, reason or f"http_{status}"] += 1
            self._latency.setdefault(route, Histogram(LATENCY_BUCKETS)).observe(seconds)

    def observe_batch(self, size: int) -> None:
        with self._lock:
            self._batch.observe(size)

    def render(self) -> str:
        """The exposition text: HELP and TYPE lines, then samples, families in a fixed order."""
        name = f"{PREFIX}_requests_total"
        with self._lock:
            lines = [
                f"# HELP {PREFIX}_model_info The model this server serves.",
                f"# TYPE {PREFIX}_model_info gauge",
                f"{PREFIX}_model_info{_labels(self._model)} 1",
                f"# HELP {name} HTTP requests answered, by route template, method and status code.",
                f"# TYPE {name} counter",
            ]
            for (route, method, status), count in sorted(self._requests.items()):
                lines.append(f"{name}{_labels({'route': route, 'method': method, 'status': str(status)})} {count}")
            name = f"{PREFIX}_errors_total"
            lines += [
                f"# HELP {name} Requests answered with a 4xx or 5xx, by route and reason.",
                f"# TYPE {name} counter",
            ]
            for (route, reason), count in sorted(self._errors.items()):
                lines.append(f"{name}{_labels({'route': route, 'reason': reason})} {count}")
            name = f"{PREFIX}_request_duration_seconds"
            lines += [f"# HELP {name} Time from request to response, by route.", f"# TYPE {name} histogram"]
            for route, histogram in sorted(self._latency.items()):
                lines += histogram.lines(name, {"route": route})
            name = f"{PREFIX}_batch_size"
            lines += [f"# HELP {name} Images per model call of the dynamic batcher.", f"# TYPE {name} histogram"]
            lines += self._batch.lines(name, {})
        return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    return repr(float(value)) if value != int(value) else str(int(value))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{key}="{_escape(value)}"' for key, value in labels.items()) + "}"
