"""Images decoded and preprocessed on a thread pool, ahead of the model, delivered in input order.

``predict``, ``eval``, calibration, ``verify --images`` and ``bench --e2e`` read images
through :class:`ImageStream`: while the caller runs the model on one chunk, the pool
decodes the next ones. Pillow releases the GIL while it decodes and resizes, and the
normalization is a table lookup in numpy, so threads scale with cores without the cost of
processes (the decoded tensors need no pickling). Memory is bounded: at most ``ahead + 2``
chunks of ``batch`` images exist at once (``ahead + 1`` being decoded or waiting, and the one
the consumer still holds), whatever the number of files.

An image that cannot be used (undecodable, over the pixel limits) never stops the stream:
it is reported in its chunk's ``skipped`` with the reason.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np

from alexnet_deploy.errors import InputError
from alexnet_deploy.imaging import ImageRejected, default_workers
from alexnet_deploy.preprocess import model_input
from alexnet_deploy.record import Preprocessing

DEFAULT_BATCH = 32
DEFAULT_AHEAD = 2


@dataclass
class Chunk:
    """One span of consecutive sources, preprocessed: the rows of ``array`` are the sources at ``indices``."""

    indices: list[int]
    array: np.ndarray  # float32, len(indices) x 3 x crop x crop
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (index, reason) of the span's unusable sources


@dataclass
class StreamStats:
    """What a stream did: images delivered and skipped, seconds the workers spent decoding
    (summed over workers) and seconds the consumer waited for them."""

    images: int = 0
    skipped: int = 0
    decode_s: float = 0.0
    wait_s: float = 0.0


class ImageStream:
    """Iterate to get :class:`Chunk` s of ``batch`` consecutive ``sources`` (paths, encoded bytes,
    PIL images or HxWx3 uint8 arrays), preprocessed with ``spec`` by ``workers`` threads
    (default: one per CPU this process may use), decoding up to ``ahead`` chunks in advance.

    Stopping early (``break``, an exception in the loop) cancels what was not started.
    ``stats`` is filled as it goes.
    """

    def __init__(self, sources: Sequence, spec: Preprocessing, batch: int = DEFAULT_BATCH, workers: int | None = None, ahead: int = DEFAULT_AHEAD):
        if batch < 1:
            raise InputError(f"batch {batch} must be at least 1.", f"e.g. {DEFAULT_BATCH}")
        if workers is not None and workers < 1:
            raise InputError(f"--workers {workers} must be at least 1.", "drop it to use one per CPU")
        self.sources = sources
        self.spec = spec
        self.batch = batch
        self.workers = workers or default_workers()
        self.ahead = max(0, ahead)
        self.stats = StreamStats()
        self._lock = threading.Lock()

    def _load(self, source, out: np.ndarray) -> str | None:
        """Preprocess ``source`` into ``out``; the reason it cannot be used, or None."""
        started = time.perf_counter()
        try:
            model_input(source, self.spec, out=out)
            return None
        except ImageRejected as exc:
            return str(exc)
        finally:
            elapsed = time.perf_counter() - started
            with self._lock:
                self.stats.decode_s += elapsed

    def __iter__(self) -> Iterator[Chunk]:
        crop = self.spec.crop
        total = len(self.sources)
        pending: deque = deque()
        next_start = 0
        with ThreadPoolExecutor(self.workers, thread_name_prefix="alexnet-decode") as pool:
            try:
                while next_start < total or pending:
                    while next_start < total and len(pending) <= self.ahead:
                        stop = min(total, next_start + self.batch)
                        buffer = np.empty((stop - next_start, 3, crop, crop), np.float32)
                        futures = [pool.submit(self._load, self.sources[i], buffer[i - next_start]) for i in range(next_start, stop)]
                        pending.append((next_start, buffer, futures))
                        next_start = stop
                    start, buffer, futures = pending.popleft()
                    tick = time.perf_counter()
                    reasons = [future.result() for future in futures]
                    self.stats.wait_s += time.perf_counter() - tick
                    good = [row for row, reason in enumerate(reasons) if reason is None]
                    skipped = [(start + row, reason) for row, reason in enumerate(reasons) if reason is not None]
                    self.stats.images += len(good)
                    self.stats.skipped += len(skipped)
                    array = buffer if len(good) == len(buffer) else buffer[good]
                    yield Chunk([start + row for row in good], array, skipped)
            finally:
                for _, _, futures in pending:
                    for future in futures:
                        future.cancel()
