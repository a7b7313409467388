"""Shared fixtures: checkpoints saved from the seeds' own classes, exports made once, a CLI runner."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).parent))

# Each pytest-xdist worker gets its share of the cores (at most 2 threads): torch in this process
# (set below), and through OMP_NUM_THREADS torch in every subprocess and numpy's OpenBLAS, whose
# idle threads otherwise spin on cores the other worker needs. On the 2-core CI host this took
# the suite from 520 s to 472 s (user CPU 11m43 -> 10m52). Set before numpy or torch is imported;
# a value the user set wins.
_THREADS_PER_WORKER = max(1, min(2, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))))
os.environ.setdefault("OMP_NUM_THREADS", str(_THREADS_PER_WORKER))

# glibc's malloc hands every freed buffer above its thresholds back to the kernel and faults it in
# again, zeroed, on the next allocation: with 230 MB AlexNets copied again and again, 40% of the
# suite's CPU time was the kernel's. The `alexnet` entry point raises the thresholds for its
# one-shot commands (alexnet_deploy/cli/memory.py); the tests call the app in-process, so this
# process does the same, and the variables give the pytest-xdist workers and every subprocess
# (all started after this file is read) the same settings from their first allocation.
from alexnet_deploy.cli.memory import keep_freed_memory  # noqa: E402

keep_freed_memory()  # before the variables below: the user's own variables turn it off
for _option, _value in {"MALLOC_MMAP_THRESHOLD_": 1 << 30, "MALLOC_TRIM_THRESHOLD_": 2**31 - 1, "MALLOC_TOP_PAD_": 1 << 28}.items():
    os.environ.setdefault(_option, str(_value))

import torch  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from seed_models import SEED_CLASSES, alive  # noqa: E402

# More threads than cores only makes every worker wait.
torch.set_num_threads(_THREADS_PER_WORKER)


# onnxruntime and OpenVINO size their thread pools by the cores, not by OMP_NUM_THREADS, and
# onnxruntime's pool threads spin while they wait: with two workers on two cores each session's
# second thread spent its time spinning on the core the other worker needed (fast tier 96.5 s
# -> 82.5 s, user+sys CPU 172 s -> 146 s with one thread). So, in the test processes only,
# sessions and compiled models the code under test leaves at the libraries' default get the
# worker's share; a thread count the code sets is passed through untouched. Tests of the
# default itself ask for `library_thread_defaults`.
_library_threads = {"limit": _THREADS_PER_WORKER}


def _share_cores_with_other_workers() -> None:
    import onnxruntime as ort

    session_init = ort.InferenceSession.__init__

    def init(self, path_or_bytes, sess_options=None, *args, **kwargs):
        if not _library_threads["limit"] or (sess_options is not None and sess_options.intra_op_num_threads != 0):
            return session_init(self, path_or_bytes, sess_options, *args, **kwargs)
        options = ort.SessionOptions() if sess_options is None else sess_options
        options.intra_op_num_threads = _library_threads["limit"]
        try:
            session_init(self, path_or_bytes, options, *args, **kwargs)
        finally:  # the session keeps its own copy; the caller's object stays as the code under test left it
            options.intra_op_num_threads = 0

    ort.InferenceSession.__init__ = init
    try:
        import openvino as ov
    except ImportError:
        return
    compile_model = ov.Core.compile_model

    def compile_with_threads(self, model, device_name=None, config=None, **kwargs):
        if _library_threads["limit"] and device_name == "CPU" and "INFERENCE_NUM_THREADS" not in (config or {}):
            config = {**(config or {}), "INFERENCE_NUM_THREADS": _library_threads["limit"]}
        return compile_model(self, model, device_name, config, **kwargs)

    ov.Core.compile_model = compile_with_threads


_share_cores_with_other_workers()


def _build_the_torchlib_registry_once() -> None:
    """torch.onnx.export builds its table of ATen -> ONNX functions anew on every call: 0.4-0.55 s
    on 2 cores, and the test processes export dozens of times (16 in the fast tier alone). Here it
    is built once per opset; each export gets its own copy (fresh lists over the same entries), so
    an op one export registers (our LRN) never reaches another. The exported graphs are the same.
    Skipped, leaving torch as it is, if torch's private registry no longer has this shape."""
    import copy

    try:
        from torch.onnx._internal.exporter import _registration
    except ImportError:
        return
    registry_class = getattr(_registration, "ONNXRegistry", None)
    build = getattr(getattr(registry_class, "from_torchlib", None), "__func__", None)
    if build is None or not isinstance(getattr(registry_class(), "functions", None), dict):
        return
    built: dict = {}

    def from_torchlib(cls, *args, **kwargs):
        key = (cls, args, tuple(sorted(kwargs.items())))
        if key not in built:
            built[key] = build(cls, *args, **kwargs)
        fresh = copy.copy(built[key])
        fresh.functions = {target: list(entries) for target, entries in built[key].functions.items()}
        return fresh

    registry_class.from_torchlib = classmethod(from_torchlib)


_build_the_torchlib_registry_once()

# Every `alexnet bench` and each of `optimize`'s bench stages first sleeps QUIET_SECONDS to read
# the host's load: 43 times in a full run, 21 s of idle cores. A tenth of a second still reads a
# share (20 clock ticks on 2 cores) and a busy host (tests/bench/test_load.py); the tests check
# what is read and reported, not the window's length.
from alexnet_deploy.bench import load as _bench_load  # noqa: E402

_bench_load.QUIET_SECONDS = 0.1


@pytest.fixture
def library_thread_defaults():
    """onnxruntime and OpenVINO left at their own thread defaults, for tests of those defaults."""
    _library_threads["limit"] = 0
    yield
    _library_threads["limit"] = _THREADS_PER_WORKER


class Cli:
    """Runs ``alexnet`` in-process; ``.ok(...)`` asserts exit 0, ``.fails(code, ...)`` the error exit."""

    def __init__(self):
        from alexnet_deploy.cli import app

        self.app = app
        self.runner = CliRunner()

    def __call__(self, *args):
        return self.runner.invoke(self.app, [str(a) for a in args])

    def ok(self, *args):
        result = self(*args)
        assert result.exit_code == 0, f"exit {result.exit_code}\nstdout:{result.stdout}\nstderr:{result.stderr}\n{result.exception!r}"
        return result

    def fails(self, code: int, *args):
        result = self(*args)
        assert result.exit_code == code, f"exit {result.exit_code} (wanted {code})\nstdout:{result.stdout}\nstderr:{result.stderr}\n{result.exception!r}"
        assert "Traceback" not in result.stdout + result.stderr
        return result


@pytest.fixture(scope="session")
def cli() -> Cli:
    return Cli()


@pytest.fixture(scope="session")
def store(tmp_path_factory) -> Path:
    """A session-wide folder for checkpoints and exports that are slow to make."""
    return tmp_path_factory.mktemp("store")


def seed_model(layout: str, num_classes: int, seed: int = 0):
    factory, size = SEED_CLASSES[layout]
    torch.manual_seed(seed)
    return alive(factory(num_classes), seed), size


@pytest.fixture(scope="session")
def seed_checkpoints(store):
    """layout -> (checkpoint path, the seed class instance it was saved from, input size). Made lazily."""
    cache: dict[str, tuple[Path, torch.nn.Module, int]] = {}

    def get(layout: str, num_classes: int = 10):
        key = f"{layout}-{num_classes}"
        if key not in cache:
            model, size = seed_model(layout, num_classes)
            path = store / f"{key}.pth"
            torch.save(model.state_dict(), path)
            cache[key] = (path, model, size)
        return cache[key]

    return get


@pytest.fixture(scope="session")
def seed_exports(store, seed_checkpoints):
    """layout -> (ONNX path, ``alexnet export --json`` summary) of the 10-class seed checkpoint.

    Made lazily, once per session, by whichever test asks first: tests that need an export
    use this instead of a file another test happens to have written.
    """
    import json

    cache: dict[str, tuple[Path, dict]] = {}

    def get(layout: str):
        if layout not in cache:
            path, _, _ = seed_checkpoints(layout, 10)
            out = store / f"export-{layout}.onnx"
            args = ["export", path, "-o", out, "--json"] + (["--arch", "caffe-227"] if layout == "caffe-227" else [])
            cache[layout] = (out, json.loads(Cli().ok(*args).stdout))
        return cache[layout]

    return get


@pytest.fixture(scope="session")
def half_width(seed_checkpoints):
    """The smallest seed layout (seed 003, 5 classes): used wherever any AlexNet will do."""
    return seed_checkpoints("half-width", 5)


@pytest.fixture(scope="session")
def half_width_onnx(store, half_width, cli, tmp_path_factory):
    """half_width exported once through the CLI, with labels."""
    path, model, _ = half_width
    labels = store / "class_indices.json"
    labels.write_text('{"0": "daisy", "1": "dandelion", "2": "roses", "3": "sunflowers", "4": "tulips"}')
    return made_once_per_run(tmp_path_factory, "half.onnx", lambda out: cli.ok("export", path, "-o", out, "--labels", labels))


def made_once_per_run(tmp_path_factory, name: str, make) -> Path:
    """The file ``make(path)`` writes, made once per test run by whichever pytest-xdist worker asks first.

    The other workers wait for it and reuse it: the same session and the same code under test
    made it, so sharing only drops the duplicate work (a full-size export is seconds of CPU
    per worker). ``make`` must leave either the whole file or none (the exporter renames it
    into place); after a failure the next worker to ask tries again.
    """
    from filelock import FileLock

    shared = _run_root(tmp_path_factory) / "made-once"
    shared.mkdir(exist_ok=True)
    path = shared / name
    with FileLock(str(shared / f"{name}.lock")):
        if not path.exists():
            make(path)
    return path


def _trained_cache_root(config, tmp_path_factory=None) -> Path | None:
    """Where the trained model's weights and images are cached: pytest's cache, else this run's temp root."""
    import trained_model as tm

    name = f"alexnet-trained-weights-{tm.cache_key()}"
    cache = getattr(config, "cache", None)
    if cache is not None:
        return Path(cache.mkdir(name))
    if tmp_path_factory is None:
        return None
    return _run_root(tmp_path_factory) / name


def _run_root(tmp_path_factory) -> Path:
    """This run's temporary root, the same folder in every pytest-xdist worker."""
    base = tmp_path_factory.getbasetemp()
    # pytest-xdist workers each get a basetemp below the run's own; they share the run's.
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


_background_builds = []


@pytest.hookimpl(trylast=True)  # after -m/-k deselection: a fast-tier run must not train
def pytest_collection_modifyitems(config, items):
    """Run the files marked ``run_first`` first, then the tests that need the trained model, and
    start training it now, in the background.

    The order is the same in every pytest-xdist worker (they must agree), and with
    ``--no-loadscope-reorder`` (pyproject.toml) it is the order files are handed out in: the
    long files first, so that the many short ones fill the time beside them. Handed out last,
    a long file ran alone at the end while the other worker sat idle: the quickstart's (over
    two minutes in one fixture), then the trained model's (94 s of one worker alone). The
    worker that takes a trained-model file first waits for training (about a minute on 2 cores),
    which meanwhile has that worker's core.
    """
    first = [item for item in items if item.get_closest_marker("run_first")]
    placed = {id(item) for item in first}
    needs = [item for item in items if "trained" in getattr(item, "fixturenames", ()) and id(item) not in placed]
    placed |= {id(item) for item in needs}
    items[:] = first + needs + [item for item in items if id(item) not in placed]
    if not needs or config.option.collectonly:  # listing the tests must not train (and wait for) a model
        return
    root = _trained_cache_root(config)
    if root is not None:
        import trained_model as tm

        child = tm.start_background_build(root)
        if child is not None:
            _background_builds.append(child)


def pytest_sessionfinish(session, exitstatus):
    """Stop a background build when the run stopped early (-x, Ctrl-C); else wait for it.

    Waiting matters under pytest-xdist: the worker that started the build may run out of
    work while another worker still waits for the model.
    """
    stopped = bool(session.shouldstop or session.shouldfail) or exitstatus == pytest.ExitCode.INTERRUPTED
    for child in _background_builds:
        if child.poll() is None and stopped:
            child.terminate()
        child.wait()


@pytest.fixture(scope="session")
def trained(request, tmp_path_factory):
    """A torchvision AlexNet trained here on procedural images, its FP32 export, and image folders.

    The image folders and trained weights are cached in pytest's cache directory (keyed
    by the generator/training code and torch version) because training takes a minute or
    two on a 2-core machine; it starts in the background at collection. The ONNX export is
    made fresh in every session by the code under test (once, for all pytest-xdist workers):
    a cached export would hide an exporter regression.
    """
    import trained_model as tm

    root = _trained_cache_root(request.config, tmp_path_factory)
    info = tm.ensure(root)
    onnx_path = made_once_per_run(tmp_path_factory, "trained.onnx", lambda out: Cli().ok(
        "export", root / "model.pth", "-o", out, "--arch", "torchvision", "--input-size", tm.CROP,
        "--resize", tm.RESIZE, "--crop", tm.CROP, "--mean", ",".join(map(str, tm.MEAN)), "--std", ",".join(map(str, tm.STD)),
    ))
    return SimpleNamespace(
        root=root, checkpoint=root / "model.pth", onnx=onnx_path,
        train=root / "train", calib=root / "calib", val=root / "val", **info,
    )
