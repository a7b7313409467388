"""Runs inside every Ray worker of the Ray tests (runtime_env worker_process_setup_hook).

It makes preprocessing raise for images of exactly POISON_SIZE pixels (a valid image that
only this worker code refuses), so a test can show that a worker
failing on one image loses only that image: monkeypatching the test process would not
reach the workers, which are separate processes.
"""

from __future__ import annotations

POISON_SIZE = (13, 17)


def poison_preprocessing() -> None:
    import alexnet_deploy.imaging as imaging

    original = imaging.transform

    def transform(image, *args, **kwargs):  # the decoded image's transform, whichever path calls it
        if getattr(image, "size", None) == POISON_SIZE:
            raise RuntimeError("injected worker failure")
        return original(image, *args, **kwargs)

    imaging.transform = transform
