"""``alexnet package --triton``: a Triton Inference Server model repository for an ONNX model or engine.

Layout (Triton's model repository convention)::

    REPO/NAME/config.pbtxt      backend, max_batch_size, inputs/outputs without the batch dim,
                                dynamic batching, instance groups
    REPO/NAME/labels.txt        one label per line, for Triton's classification extension
    REPO/NAME/1/model.onnx      (onnxruntime or openvino backend) or 1/model.plan (tensorrt backend)

The openvino backend reads the same model.onnx (``default_model_filename``), runs on the
CPU only, and takes its settings as ``parameters``; it has no key that forces f32, so on a
BF16 CPU it computes in BF16 (the plugin's default), as ``alexnet verify --runtime
openvino-bf16`` checks beforehand.

The folder is assembled next to its destination and renamed into place, so a failure
leaves no half-made model behind; ``--force`` swaps it with the old entry in one atomic
step where the OS allows, so the repository always holds a complete model.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
import signal
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from alexnet_deploy.errors import InputError

_TYPES = {1: "TYPE_FP32", 10: "TYPE_FP16"}  # onnx.TensorProto element types
DEFAULT_MAX_BATCH = 64


@dataclass
class TritonModel:
    """What was written: the model folder, its config text and the figures in it."""

    path: Path
    config: str
    backend: str
    max_batch_size: int
    labels: int

    def to_dict(self) -> dict:
        return {"path": str(self.path), "backend": self.backend, "max_batch_size": self.max_batch_size, "labels": self.labels, "config": self.config}


def _quote(text: str) -> str:
    """A protobuf text-format string literal."""
    return json.dumps(text)


def _dims(values) -> str:
    return "[ " + ", ".join(str(int(v)) for v in values) + " ]"


def render_config(name: str, backend: str, input_name: str, input_type: str, input_dims, output_name: str, output_type: str,
                  output_dims, max_batch_size: int, instances: int, dynamic_batching: bool, gpu: bool) -> str:
    """config.pbtxt text (Triton's ModelConfig in protobuf text format)."""
    lines = [f"name: {_quote(name)}"]
    platform = {"onnxruntime": "onnxruntime_onnx", "tensorrt": "tensorrt_plan"}.get(backend)
    if platform:
        lines.append(f'platform: "{platform}"')
    lines.append(f'backend: "{backend}"')
    if backend == "openvino":
        lines.append('default_model_filename: "model.onnx"')  # the backend looks for model.xml otherwise
    lines += [
        f"max_batch_size: {max_batch_size}",
        "input [",
        f"  {{ name: {_quote(input_name)} data_type: {input_type} dims: {_dims(input_dims)} }}",
        "]",
        "output [",
        f'  {{ name: {_quote(output_name)} data_type: {output_type} dims: {_dims(output_dims)} label_filename: "labels.txt" }}',
        "]",
    ]
    if dynamic_batching and max_batch_size > 0:
        lines.append("dynamic_batching { max_queue_delay_microseconds: 100 }")
    kind = "KIND_GPU" if gpu else ("KIND_CPU" if backend == "openvino" else "KIND_AUTO")
    lines.append(f"instance_group [ {{ count: {instances} kind: {kind} }} ]")
    if backend == "openvino":
        # One stream per instance, latency first: the settings the OpenVINO rows in BENCHMARKS.md ran with.
        lines += [
            "parameters [",
            '  { key: "NUM_STREAMS" value: { string_value: "1" } },',
            '  { key: "PERFORMANCE_HINT" value: { string_value: "LATENCY" } }',
            "]",
        ]
    return "\n".join(lines) + "\n"


def package_triton(model: Path, repo: Path, name: str = "alexnet", max_batch: int | None = None, instances: int = 1,
                   dynamic_batching: bool = True, force: bool = False, backend: str | None = None) -> TritonModel:
    """Write ``repo/name`` for ``model`` (an ONNX file from this toolkit, or an engine with its sidecar).

    ``backend`` for ONNX files: 'onnxruntime' (default) or 'openvino'; engines always use tensorrt.
    """
    from alexnet_deploy.record import check_labels
    from alexnet_deploy.onnx_file import check_input_file, check_model_name, file_kind

    model = check_input_file(Path(model), "model")
    check_model_name(name)
    kind = file_kind(model)
    if instances < 1:
        raise InputError(f"--instances {instances} must be at least 1.", "e.g. --instances 2")
    if max_batch is not None and max_batch < 1:
        raise InputError(f"--max-batch {max_batch} must be at least 1.", "e.g. --max-batch 64")
    repo = Path(repo)
    if repo.exists() and not repo.is_dir():
        raise InputError(f"{repo} exists and is not a folder.", "give a directory for the model repository")
    target = repo / name
    if target.exists() and not force:
        raise InputError(f"{target} already exists.", "choose another --name, or add --force to replace it")

    if backend not in (None, "onnxruntime", "openvino"):
        raise InputError(f"unknown Triton backend {backend!r}.", "use --backend onnxruntime or --backend openvino")
    if kind == "engine" and backend is not None:
        raise InputError(f"{model} is a TensorRT engine: it runs on Triton's tensorrt backend only (not --backend {backend}).", "drop --backend, or package the .onnx")
    if kind == "engine":
        from alexnet_deploy.runtimes.tensorrt import read_sidecar

        sidecar = read_sidecar(model)
        low, limit = sidecar.profile["min"], sidecar.profile["max"]
        if low == limit and low > 1:  # a fixed-batch engine: Triton passes whole tensors, batch included
            if max_batch is not None:
                raise InputError(f"{model} has a fixed batch of {low}, so Triton cannot batch it (--max-batch).", "drop --max-batch, or build from a dynamic-batch ONNX")
            size, in_dims, out_dims = 0, [low, *sidecar.input_shape], [low, len(sidecar.labels)]
        else:
            if low > 1:
                raise InputError(f"the engine's profile starts at batch {low}; Triton sends batches from 1.", "rebuild it with --min-batch 1")
            if max_batch is not None and max_batch > limit:
                raise InputError(f"--max-batch {max_batch} exceeds the engine's profile (max {limit}).", f"use --max-batch {limit} or less, or rebuild with a larger --max-batch")
            size, in_dims, out_dims = min(max_batch or DEFAULT_MAX_BATCH, limit), sidecar.input_shape, [len(sidecar.labels)]
        config = render_config(name, "tensorrt", sidecar.input_name, "TYPE_FP32", in_dims, sidecar.output_name, "TYPE_FP32",
                               out_dims, size, instances, dynamic_batching, gpu=True)
        labels, filename = sidecar.labels, "model.plan"
        if not labels:
            raise InputError(f"{model}'s sidecar has no labels.", "build the engine from an ONNX file made by `alexnet export`")
        check_labels(labels, f"{model}'s sidecar labels", "rebuild the engine from an ONNX file exported with clean --labels")
    elif kind == "onnx":
        from alexnet_deploy.record import read_record
        from alexnet_deploy.onnx_file import load_onnx

        proto = load_onnx(model, load_weights=False)
        record = read_record(proto, str(model))
        graph_in, graph_out = proto.graph.input[0], proto.graph.output[0]
        in_dims = [d.dim_value if d.HasField("dim_value") else -1 for d in graph_in.type.tensor_type.shape.dim]
        out_dims = [d.dim_value if d.HasField("dim_value") else -1 for d in graph_out.type.tensor_type.shape.dim]
        in_type = _TYPES.get(graph_in.type.tensor_type.elem_type)
        out_type = _TYPES.get(graph_out.type.tensor_type.elem_type)
        if in_type is None or out_type is None:
            raise InputError(f"{model}'s input/output types are not float32/float16.", "export it with `alexnet export`")
        if in_dims[0] > 0:  # a fixed batch: Triton must not add a batch dimension
            if max_batch is not None:
                raise InputError(f"{model} has a fixed batch of {in_dims[0]}, so Triton cannot batch it (--max-batch).", "re-export with --batch dynamic, or drop --max-batch")
            size, in_shape, out_shape = 0, in_dims, out_dims
        else:
            size, in_shape = max_batch or DEFAULT_MAX_BATCH, in_dims[1:]
            out_shape = out_dims[1:] if all(d > 0 for d in out_dims[1:]) else [len(record.labels)]
        onnx_backend = backend or "onnxruntime"
        config = render_config(name, onnx_backend, graph_in.name, in_type, in_shape, graph_out.name, out_type, out_shape,
                               size, instances, dynamic_batching, gpu=False)
        labels, filename = list(record.labels), "model.onnx"
        check_labels(labels, f"{model}'s labels", "re-export it with `alexnet export --labels FILE` (one label per line)")
    else:
        raise InputError(f"{model} is neither an ONNX model nor a TensorRT engine.", "package the .onnx from `alexnet export`/`quantize`, or an .engine from `alexnet build`")

    try:
        repo.mkdir(parents=True, exist_ok=True)
        # Staged beside the repository, where a polling Triton will not look; inside it (hidden)
        # when it is a mount point (a rename cannot cross filesystems) or its parent is read-only.
        parent = repo.resolve().parent
        stage_dir = parent if os.access(parent, os.W_OK) and os.stat(parent).st_dev == os.stat(repo).st_dev else repo.resolve()
        staging = Path(tempfile.mkdtemp(prefix=f".{repo.name}-{name}.", dir=stage_dir))
    except OSError as exc:
        raise InputError(f"cannot write the model repository {repo} ({exc.strerror or exc}).", "choose a writable --triton folder") from None
    try:
        (staging / "1").mkdir()
        shutil.copyfile(model, staging / "1" / filename)
        (staging / "config.pbtxt").write_text(config)
        (staging / "labels.txt").write_text("\n".join(labels) + "\n")
        os.chmod(staging, 0o755)
        if target.exists() or target.is_symlink():
            _replace_entry(staging, target, stage_dir, f".{repo.name}-{name}.old.")
        else:
            os.replace(staging, target)
    except OSError as exc:
        raise InputError(f"cannot write {target} ({exc.strerror or exc}).", "check free space and permissions of the --triton folder") from None
    finally:
        # Gone already on success; holds the old entry after an exchange. An old entry that was a
        # symlink is removed as a link: the folder it pointed at is the user's, and stays.
        if staging.is_symlink():
            staging.unlink()
        else:
            shutil.rmtree(staging, ignore_errors=True)
    used = "tensorrt" if filename == "model.plan" else onnx_backend
    return TritonModel(target, config, used, size, len(labels))


_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux renameat2 RENAME_EXCHANGE); False where unsupported.

    Unsupported means: not Linux, a libc without renameat2 (glibc < 2.28, some musl), a
    kernel before 3.15 (ENOSYS) or a filesystem without exchange support (EINVAL).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)  # the running process's libc; find_library would spawn ldconfig
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    renameat2.restype = ctypes.c_int
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _replace_entry(staging: Path, target: Path, stage_dir: Path, prefix: str) -> None:
    """Put the folder ``staging`` at ``target`` (which exists) so that ``target`` is never missing.

    With an exchange the old model lands in ``staging`` (the caller removes it). Without
    one, two renames leave a moment with no ``target``; Ctrl-C is held off across it and
    any failure moves the old model back, so only a crash of the machine can lose it.
    """
    if _exchange(staging, target):
        return
    aside = Path(tempfile.mkdtemp(prefix=prefix, dir=stage_dir))
    blocked = hasattr(signal, "pthread_sigmask")
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM}) if blocked else None
    try:
        try:
            os.replace(target, aside / target.name)
            os.replace(staging, target)
        except BaseException:
            if (aside / target.name).exists() and not target.exists():
                os.replace(aside / target.name, target)  # --force must not lose the model it was replacing
            raise
    finally:
        try:
            shutil.rmtree(aside, ignore_errors=True)
        finally:
            # Restored whatever happened above: a process left with SIGTERM blocked could never be
            # stopped (and its children inherit the mask).
            if blocked:
                signal.pthread_sigmask(signal.SIG_SETMASK, previous)  # a Ctrl-C held off is delivered now
