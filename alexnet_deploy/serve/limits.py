"""What one ``alexnet serve`` process accepts: every resource a client can make it spend is capped here."""

from __future__ import annotations

from dataclasses import dataclass

BINARY_COST = 2  # a binary body and the float32 tensor decoded from it
JSON_COST = 12  # a JSON body decodes to ~10x its size in Python objects (measured: 64 MB -> +651 MB RSS)


# The answer (503, Retry-After) when --max-pending-mb is in use by other requests.
BUSY_MESSAGE = "the server is busy (too much request data in progress); retry shortly"


def request_cost(length: int, binary: bool) -> int:
    """Bytes of memory a request of ``length`` body bytes is expected to hold while it is handled."""
    return length * (BINARY_COST if binary else JSON_COST)


@dataclass(frozen=True)
class Limits:
    """Defaults are sized for a 224x224 AlexNet on a small machine; each has an ``alexnet serve`` flag.

    * ``max_body_mb``: a request body (binary tensor extension) and the input tensor its declared
      shape implies (checked before any data is decoded). 64 MiB holds a 100-image FP32 batch.
    * ``max_json_mb``: a JSON body, or the JSON header of a binary request. JSON numbers decode into
      Python objects ~10x their text size, so this is much lower: 16 MiB is ~5 images at 224x224
      as tritonclient writes them (~3 MB each); big batches go binary (tritonclient's default).
    * ``max_connections``: open client connections; more are answered 503 and closed.
    * ``max_queue``: requests waiting for the model; more get 503 with ``Retry-After``.
    * ``max_pending_mb``: memory that requests being read, decoded or waiting may hold together,
      estimated from the headers (2x the binary part of a body, 12x its JSON part: JSON numbers
      become Python floats); a request that would pass it gets 503 with ``Retry-After`` before its body is read.
    * ``request_timeout_s``: to send one whole request (headers and body, and the idle time before
      it on a kept-alive connection); a client slower than that is dropped however it trickles.
    * ``infer_timeout_s``: how long a request waits for the model before a 503; its job is then
      dropped, not run.
    """

    max_body_mb: float = 64
    max_json_mb: float = 16
    max_connections: int = 128
    max_queue: int = 64
    max_pending_mb: float = 256
    request_timeout_s: float = 30
    infer_timeout_s: float = 60

    @property
    def max_body(self) -> int:
        return int(self.max_body_mb * (1 << 20))

    @property
    def max_pending(self) -> int:
        return int(self.max_pending_mb * (1 << 20))

    @property
    def max_json(self) -> int:
        return int(self.max_json_mb * (1 << 20))

    def problems(self) -> list[str]:
        """Values that cannot work, as flag-named messages (empty when all are usable)."""
        checks = [
            (0 < self.max_body_mb <= 4096, "--max-body-mb must be within (0, 4096]"),
            (0 < self.max_json_mb <= self.max_body_mb, "--max-json-mb must be > 0 and at most --max-body-mb"),
            (1 <= self.max_connections <= 65536, "--max-connections must be within 1..65536"),
            (self.max_pending_mb >= max(BINARY_COST * self.max_body_mb, JSON_COST * self.max_json_mb),
             f"--max-pending-mb must be at least {BINARY_COST}x --max-body-mb and {JSON_COST}x --max-json-mb, or the largest allowed request could never run"),
            (1 <= self.max_queue <= 100_000, "--max-queue must be within 1..100000"),
            (0 < self.request_timeout_s <= 3600, "--request-timeout-s must be within (0, 3600]"),
            (0 < self.infer_timeout_s <= 3600, "--infer-timeout-s must be within (0, 3600]"),
        ]
        return [message for ok, message in checks if not ok]
