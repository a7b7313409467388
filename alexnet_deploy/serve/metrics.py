"""Prometheus metrics of ``alexnet serve`` at ``GET /metrics`` (text exposition format 0.0.4).

What users of Triton and KServe ask for: request counts by endpoint and status, and where a
request's time goes, split into queue (waiting for the model), preprocess (decoding the
request: JSON or binary tensors, or JPEG/PNG images) and infer (the model call of its batch).
Every series carries the model's name. No dependency: the format is a few lines of text.
"""

from __future__ import annotations

import bisect
import threading

# Seconds: from a fraction of a millisecond (a tiny batch on a fast CPU) to the default infer timeout.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _label_value(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(pairs: dict[str, str]) -> str:
    return "{" + ",".join(f'{key}="{_label_value(value)}"' for key, value in pairs.items()) + "}" if pairs else ""


def _number(value: float) -> str:
    return repr(float(value)) if value != int(value) else str(int(value))


class Histogram:
    """Observations in cumulative buckets, with their count and sum (thread-safe)."""

    def __init__(self, buckets=BUCKETS):
        self.buckets = tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)  # the last one is +Inf
        self.total = 0.0
        self.lock = threading.Lock()

    def observe(self, value: float) -> None:
        index = bisect.bisect_left(self.buckets, value)  # a value equal to a bound belongs to that bucket (le)
        with self.lock:
            self.counts[index] += 1
            self.total += value

    def lines(self, name: str, labels: dict[str, str]) -> list[str]:
        with self.lock:
            counts, total = list(self.counts), self.total
        lines, running = [], 0
        for bound, count in zip(self.buckets + (float("inf"),), counts):
            running += count
            le = "+Inf" if bound == float("inf") else _number(bound)
            lines.append(f"{name}_bucket{_labels({**labels, 'le': le})} {running}")
        lines.append(f"{name}_sum{_labels(labels)} {_number(total)}")
        lines.append(f"{name}_count{_labels(labels)} {running}")
        return lines


class ServeMetrics:
    """The counters and histograms of one served model; ``render()`` is the /metrics body."""

    HISTOGRAMS = {
        "alexnet_request_queue_seconds": "Time a request waited for the model (from its tensor being queued to its batch starting).",
        "alexnet_request_preprocess_seconds": "Time to decode a request into the input tensor (JSON or binary tensors; JPEG/PNG decoding and preprocessing).",
        "alexnet_request_infer_seconds": "Time of the model call that ran a request's batch.",
    }

    def __init__(self, model: str):
        self.model = model
        self.requests: dict[tuple[str, int], int] = {}
        self.images = 0  # encoded images decoded and preprocessed
        self.histograms = {name: Histogram() for name in self.HISTOGRAMS}
        self.lock = threading.Lock()
        self.gauges = {}  # name -> (help, callable returning a number)

    def count_request(self, endpoint: str, status: int) -> None:
        with self.lock:
            key = (endpoint, int(status))
            self.requests[key] = self.requests.get(key, 0) + 1

    def count_images(self, count: int) -> None:
        with self.lock:
            self.images += count

    def observe(self, name: str, seconds: float) -> None:
        self.histograms[name].observe(seconds)

    def gauge(self, name: str, help_text: str, read) -> None:
        """A value read when /metrics is rendered (``read()`` returns a number)."""
        self.gauges[name] = (help_text, read)

    def render(self, counters: dict[str, tuple[str, float]] | None = None) -> bytes:
        """The exposition text; ``counters``: more counters (name -> (help, value)) known to the caller."""
        model = {"model": self.model}
        lines = ["# HELP alexnet_requests_total HTTP requests answered, by endpoint and status code.", "# TYPE alexnet_requests_total counter"]
        with self.lock:
            requests = sorted(self.requests.items())
            images = self.images
        for (endpoint, status), count in requests:
            lines.append(f"alexnet_requests_total{_labels({**model, 'endpoint': endpoint, 'code': str(status)})} {count}")
        extra = {"alexnet_images_decoded_total": ("Encoded images (JPEG/PNG) decoded and preprocessed by the server.", images)}
        for name, (help_text, value) in {**extra, **(counters or {})}.items():
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} counter", f"{name}{_labels(model)} {_number(value)}"]
        for name, (help_text, read) in self.gauges.items():
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name}{_labels(model)} {_number(read())}"]
        for name, histogram in self.histograms.items():
            lines += [f"# HELP {name} {self.HISTOGRAMS[name]}", f"# TYPE {name} histogram"] + histogram.lines(name, model)
        return ("\n".join(lines) + "\n").encode()
