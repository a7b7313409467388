"""The batch queue: one worker thread runs whatever requests are waiting as one model call."""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from alexnet_deploy.serve.protocol import RequestError

DRAIN_S = 30  # at stop, how long the worker may take to finish what is queued


class Share:
    """A request's share of a memory budget (anything with ``give(amount)``), given back exactly once.

    Once its job is queued the share belongs to the batcher, which gives it back when the worker
    is done with the job: a client that gives up leaves its tensor in the queue, and the memory
    must stay counted until the worker drops it.
    """

    def __init__(self, budget, amount: int):
        self.budget, self.amount = budget, amount
        self.queued = False
        self._given = False
        self._lock = threading.Lock()

    def give(self) -> None:
        with self._lock:
            if self._given:
                return
            self._given = True
        self.budget.give(self.amount)

    def resize(self, amount: int) -> bool:
        """Hold ``amount`` bytes instead: give back the difference, or take it from the budget
        (False, nothing changed, when the budget has not got it)."""
        with self._lock:
            if self._given:
                return False
            extra = amount - self.amount
            if extra > 0 and not self.budget.take(extra):
                return False
            if extra < 0:
                self.budget.give(-extra)
            self.amount = amount
            return True


@dataclass
class Job:
    batch: np.ndarray
    done: threading.Event = field(default_factory=threading.Event)
    result: np.ndarray | None = None
    error: str | None = None
    # Set by the waiting request when its client gave up (timeout or disconnect); the worker
    # skips such jobs, so an abandoned request costs no model time.
    cancelled: bool = False
    share: Share | None = None
    queued_at: float = field(default_factory=time.monotonic)

    def finish(self) -> None:
        """The worker is done with this job: wake its request and give back its memory share."""
        self.done.set()
        if self.share is not None:
            self.share.give()


class Batcher:
    """Runs queued inputs together: up to ``max_batch`` rows per call, waiting at most ``max_delay_s`` to fill.

    The queue holds at most ``max_queue`` requests: past that, :meth:`submit` answers 503 at once
    rather than let waiting requests (and their input tensors) pile up without bound.
    """

    def __init__(self, runtime, max_batch: int, max_delay_s: float, max_queue: int = 64, metrics=None):
        self.runtime = runtime
        self.metrics = metrics  # a serve.metrics.ServeMetrics: queue and infer time per request
        self.max_batch = max_batch
        self.max_delay_s = max_delay_s
        self.jobs: queue.Queue = queue.Queue(maxsize=max_queue)
        self._carry: Job | None = None  # a job that did not fit the last batch; first in the next one
        self.inference_count = 0
        self.execution_count = 0
        self.dropped_count = 0  # jobs skipped because their client gave up
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="alexnet-batcher", daemon=True)
        self._thread.start()

    def submit(self, batch: np.ndarray, timeout: float = 60.0, gone=None, share: Share | None = None) -> np.ndarray:
        """The model's output rows for ``batch``; ``gone()`` says whether the client has disconnected.

        A ``share`` is given back by the worker once it is done with the job (``share.queued``
        says the batcher took it); if the queue is full it stays with the caller.
        """
        job = Job(batch, share=share)
        try:
            self.jobs.put_nowait(job)
        except queue.Full:
            raise RequestError("the server is busy (request queue full); retry shortly", 503, {"Retry-After": "1"}) from None
        if share is not None:
            share.queued = True
        deadline = time.monotonic() + timeout
        # Wait in short slices so a client that hangs up is noticed and its job dropped before it runs.
        while not job.done.wait(min(0.1, max(0.0, deadline - time.monotonic()))):
            if time.monotonic() >= deadline:
                job.cancelled = True
                raise RequestError("the model did not answer in time", 503, {"Retry-After": "1"})
            if gone is not None and gone():
                job.cancelled = True
                raise ConnectionAbortedError("the client disconnected while its request waited")
        if job.error:
            raise RequestError(job.error, 500)
        return job.result

    def _next(self, timeout: float) -> Job:
        if self._carry is not None:
            job, self._carry = self._carry, None
            return job
        return self.jobs.get(timeout=timeout)

    def _loop(self) -> None:
        while True:
            try:
                first = self._next(0.1)
            except queue.Empty:
                if self._stop.is_set():
                    return  # stopped and nothing left queued
                continue
            if first.cancelled:
                self._drop(first)
                continue
            try:
                self._collect_and_run(first)
            except Exception as exc:  # never let the worker die: every later request would hang
                first.error = first.error or f"batching failed: {type(exc).__name__}"
                first.finish()

    def _drop(self, job: Job) -> None:
        self.dropped_count += 1
        job.finish()

    def _collect_and_run(self, first: Job) -> None:
        """Wait up to max_delay for more jobs (none once stopping), then run them as one batch."""
        group, rows = [first], len(first.batch)
        deadline = time.monotonic() + (0.0 if self._stop.is_set() else self.max_delay_s)
        while rows < self.max_batch:
            try:
                job = self._next(max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if job.cancelled:
                self._drop(job)
                continue
            if rows + len(job.batch) > self.max_batch:
                self._carry = job  # first of the next round (re-queueing could block on a full queue)
                break
            group.append(job)
            rows += len(job.batch)
        # A client may have hung up during the wait for company: run only what is still wanted.
        for job in [job for job in group if job.cancelled]:
            self._drop(job)
        group = [job for job in group if not job.cancelled]
        if group:
            self._run(group)

    def _run(self, group: list[Job]) -> None:
        started = time.monotonic()
        try:
            logits = self.runtime.run_all(np.concatenate([job.batch for job in group]), self.max_batch)
            if self.metrics is not None:
                took = time.monotonic() - started
                for job in group:
                    self.metrics.observe("alexnet_request_queue_seconds", started - job.queued_at)
                    self.metrics.observe("alexnet_request_infer_seconds", took)
            self.execution_count += 1
            self.inference_count += sum(len(job.batch) for job in group)
            start = 0
            for job in group:
                job.result = logits[start:start + len(job.batch)]
                start += len(job.batch)
        except Exception as exc:  # answer every waiting request rather than hang
            for job in group:
                job.error = f"inference failed: {str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}"
        for job in group:
            job.finish()

    def stop(self) -> None:
        """Run what is still queued, then end the worker."""
        self._stop.set()
        self._thread.join(timeout=DRAIN_S)
