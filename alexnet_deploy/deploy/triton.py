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
    """What was written: the model folder, its config text and the figures in it.

    ``image_ensemble``/``preprocess``: the folders of the encoded-image entry (an ensemble) and
    its Python backend step, when ``image_input`` asked for them.
    """

    path: Path
    config: str
    backend: str
    max_batch_size: int
    labels: int
    image_ensemble: Path | None = None
    preprocess: Path | None = None

    def to_dict(self) -> dict:
        return {"path": str(self.path), "backend": self.backend, "max_batch_size": self.max_batch_size, "labels": self.labels, "config": self.config,
                "image_ensemble": None if self.image_ensemble is None else str(self.image_ensemble),
                "preprocess": None if self.preprocess is None else str(self.preprocess)}


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


IMAGE_INPUT = "image"  # the ensemble's BYTES input, as `alexnet serve` names it


def render_preprocess_config(name: str, tensor_name: str, tensor_type: str, chw, max_batch_size: int, instances: int, preprocessing: dict) -> str:
    """config.pbtxt of the Python backend step: encoded images (TYPE_STRING, one per row) -> the model's input tensor."""
    return "\n".join([
        f"name: {_quote(name)}",
        'backend: "python"',
        f"max_batch_size: {max_batch_size}",
        f'input [ {{ name: "{IMAGE_INPUT}" data_type: TYPE_STRING dims: [ 1 ] }} ]',
        f"output [ {{ name: {_quote(tensor_name)} data_type: {tensor_type} dims: {_dims(chw)} }} ]",
        f"instance_group [ {{ count: {instances} kind: KIND_CPU }} ]",
        f'parameters [ {{ key: "preprocessing" value: {{ string_value: {_quote(json.dumps(preprocessing, sort_keys=True))} }} }} ]',
    ]) + "\n"


def render_ensemble_config(name: str, preprocess: str, model: str, tensor_name: str, output_name: str, output_type: str, output_dims, max_batch_size: int) -> str:
    """config.pbtxt of the ensemble that takes encoded images: the Python step, then the model."""
    return "\n".join([
        f"name: {_quote(name)}",
        'platform: "ensemble"',
        f"max_batch_size: {max_batch_size}",
        f'input [ {{ name: "{IMAGE_INPUT}" data_type: TYPE_STRING dims: [ 1 ] }} ]',
        f'output [ {{ name: {_quote(output_name)} data_type: {output_type} dims: {_dims(output_dims)} label_filename: "labels.txt" }} ]',
        "ensemble_scheduling {",
        "  step [",
        f'    {{ model_name: {_quote(preprocess)} model_version: -1 input_map {{ key: "{IMAGE_INPUT}" value: "{IMAGE_INPUT}" }} '
        f'output_map {{ key: {_quote(tensor_name)} value: "preprocessed" }} }},',
        f'    {{ model_name: {_quote(model)} model_version: -1 input_map {{ key: {_quote(tensor_name)} value: "preprocessed" }} '
        f"output_map {{ key: {_quote(output_name)} value: {_quote(output_name)} }} }}",
        "  ]",
        "}",
    ]) + "\n"


def python_model_source() -> str:
    """The Python backend's model.py: the toolkit's imaging module, then the Triton adapter, verbatim."""
    from alexnet_deploy import imaging
    from alexnet_deploy.deploy import triton_python_model

    return Path(imaging.__file__).read_text() + "\n\n" + Path(triton_python_model.__file__).read_text()


def external_data_files(proto, model: Path) -> list[str]:
    """Relative paths (to ``model``'s folder) of the files holding ``proto``'s external weights.

    InputError when one is missing, too short for what the model reads from it, or not a
    plain relative path inside the model's folder (it could not be copied beside it).
    """
    import onnx
    from onnx.external_data_helper import ExternalDataInfo

    folder = model.resolve().parent
    needed: dict[str, int] = {}
    for tensor in proto.graph.initializer:
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = ExternalDataInfo(tensor)
        location = Path(info.location)
        if location.is_absolute() or ".." in location.parts or not info.location:
            raise InputError(f"{model} keeps weights in {info.location!r}, which is not a file beside it.", "re-save the model with its weights inside (onnx.save without external data)")
        end = (info.offset or 0) + (info.length or 0)
        needed[info.location] = max(needed.get(info.location, 0), end)
    for location, end in needed.items():
        path = folder / location
        if not path.is_file():
            raise InputError(f"{model} keeps its weights in {location}, which is missing beside it.", f"put {location} next to {model.name}, or package the file that holds its weights")
        if path.stat().st_size < end:
            raise InputError(f"{model}'s weights file {location} is shorter ({path.stat().st_size} bytes) than the model reads ({end}).", "re-export or re-copy the model and its weights file")
    return sorted(needed)


def check_loads(path: Path) -> None:
    """InputError unless the ONNX file at ``path`` (with any external weights beside it) passes onnx.checker."""
    import onnx

    try:
        onnx.checker.check_model(str(path))
    except Exception as exc:  # noqa: BLE001 - ValidationError, DecodeError, OSError: the file is not usable
        raise InputError(f"the model does not load ({type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}); nothing was packaged.",
                         "package the .onnx that `alexnet export`/`quantize` wrote, with its weights") from None


@dataclass
class _Entry:
    """One repository folder to write: files by relative path (text, or a source file to copy)."""

    name: str
    files: dict[str, str | Path]
    check: str | None = None  # a staged ONNX file (relative path) that must load before it is moved into place


def package_triton(model: Path, repo: Path, name: str = "alexnet", max_batch: int | None = None, instances: int = 1,
                   dynamic_batching: bool = True, force: bool = False, backend: str | None = None, image_input: bool = False) -> TritonModel:
    """Write ``repo/name`` for ``model`` (an ONNX file from this toolkit, or an engine with its sidecar).

    ``backend`` for ONNX files: 'onnxruntime' (default) or 'openvino'; engines always use tensorrt.
    An ONNX file's external weights are copied beside it, and the copy must pass onnx.checker
    before it is moved into place. ``image_input`` also writes ``NAME_image``, an ensemble that
    takes encoded images (BYTES ``image``), and its Python backend step ``NAME_preprocess``,
    which preprocesses them with this toolkit's own code (Triton's Python needs numpy and Pillow).
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
    companions = [f"{name}_preprocess", f"{name}_image"]
    names = [name] + (companions if image_input else [])
    for entry in names:
        check_model_name(entry)
        if (repo / entry).exists() and not force:
            raise InputError(f"{repo / entry} already exists.", "choose another --name, or add --force to replace it")
    stale = [entry for entry in companions if not image_input and (repo / entry).exists()]
    if stale and force:
        # They would keep feeding the replaced model with the old model's preprocessing.
        raise InputError(f"{repo / stale[0]} belongs to the model being replaced (an --image-input entry).",
                         "add --image-input to replace it too, or remove it first")

    if backend not in (None, "onnxruntime", "openvino"):
        raise InputError(f"unknown Triton backend {backend!r}.", "use --backend onnxruntime or --backend openvino")
    if kind == "engine" and backend is not None:
        raise InputError(f"{model} is a TensorRT engine: it runs on Triton's tensorrt backend only (not --backend {backend}).", "drop --backend, or package the .onnx")
    files: dict[str, str | Path] = {}
    check = None
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
        in_name, in_type, out_name, out_type = sidecar.input_name, "TYPE_FP32", sidecar.output_name, "TYPE_FP32"
        config = render_config(name, "tensorrt", in_name, in_type, in_dims, out_name, "TYPE_FP32", out_dims, size, instances, dynamic_batching, gpu=True)
        labels, preprocessing = sidecar.labels, dict(sidecar.preprocessing or {})
        files["1/model.plan"] = model
        if not labels:
            raise InputError(f"{model}'s sidecar has no labels.", "build the engine from an ONNX file made by `alexnet export`")
        check_labels(labels, f"{model}'s sidecar labels", "rebuild the engine from an ONNX file exported with clean --labels")
    elif kind == "onnx":
        from dataclasses import asdict

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
        in_name, out_name = graph_in.name, graph_out.name
        config = render_config(name, onnx_backend, in_name, in_type, in_shape, out_name, out_type, out_shape, size, instances, dynamic_batching, gpu=False)
        labels, preprocessing = list(record.labels), asdict(record.preprocessing)
        in_dims, out_dims = in_shape, out_shape
        files["1/model.onnx"] = model
        for location in external_data_files(proto, model):  # weights kept beside the file travel with it
            files[f"1/{location}"] = model.resolve().parent / location
        check = "1/model.onnx"
        check_labels(labels, f"{model}'s labels", "re-export it with `alexnet export --labels FILE` (one label per line)")
    else:
        raise InputError(f"{model} is neither an ONNX model nor a TensorRT engine.", "package the .onnx from `alexnet export`/`quantize`, or an .engine from `alexnet build`")

    labels_text = "\n".join(labels) + "\n"
    entries = [_Entry(name, {"config.pbtxt": config, "labels.txt": labels_text, **files}, check)]
    if image_input:
        if size == 0:
            raise InputError(f"{model} has a fixed batch, so an ensemble cannot batch images into it (--image-input).", "re-export with --batch dynamic, or drop --image-input")
        if not preprocessing:
            raise InputError(f"{model} records no preprocessing, so encoded images cannot be prepared for it.", "build the engine from an ONNX file made by `alexnet export`")
        preprocess_name, ensemble_name = names[1], names[2]
        entries.append(_Entry(preprocess_name, {
            "config.pbtxt": render_preprocess_config(preprocess_name, in_name, in_type, in_dims, size, instances, preprocessing),
            "1/model.py": python_model_source(),
        }))
        entries.append(_Entry(ensemble_name, {
            "config.pbtxt": render_ensemble_config(ensemble_name, preprocess_name, name, in_name, out_name, out_type, out_dims, size),
            "labels.txt": labels_text,
            "1/": "",  # Triton wants a version folder, even an empty one, for an ensemble
        }))
    written = _write_entries(repo, entries)
    used = "tensorrt" if kind == "engine" else onnx_backend
    return TritonModel(written[0], config, used, size, len(labels), written[2] if image_input else None, written[1] if image_input else None)


def _write_entries(repo: Path, entries: list[_Entry]) -> list[Path]:
    """Assemble every entry beside ``repo`` (copies made, ONNX checked), then move each into place in
    one step (see the module docstring): a failure while staging leaves the repository as it was."""
    try:
        repo.mkdir(parents=True, exist_ok=True)
        # Staged beside the repository, where a polling Triton will not look; inside it (hidden)
        # when it is a mount point (a rename cannot cross filesystems) or its parent is read-only.
        parent = repo.resolve().parent
        stage_dir = parent if os.access(parent, os.W_OK) and os.stat(parent).st_dev == os.stat(repo).st_dev else repo.resolve()
    except OSError as exc:
        raise InputError(f"cannot write the model repository {repo} ({exc.strerror or exc}).", "choose a writable --triton folder") from None
    stagings: list[Path] = []
    try:
        for entry in entries:
            try:
                staging = Path(tempfile.mkdtemp(prefix=f".{repo.name}-{entry.name}.", dir=stage_dir))
            except OSError as exc:
                raise InputError(f"cannot write the model repository {repo} ({exc.strerror or exc}).", "choose a writable --triton folder") from None
            stagings.append(staging)
            _stage(staging, entry)
        targets = []
        for entry, staging in zip(entries, stagings):
            target = repo / entry.name
            try:
                if target.exists() or target.is_symlink():
                    _replace_entry(staging, target, stage_dir, f".{repo.name}-{entry.name}.old.")
                else:
                    os.replace(staging, target)
            except OSError as exc:
                raise InputError(f"cannot write {target} ({exc.strerror or exc}).", "check free space and permissions of the --triton folder") from None
            targets.append(target)
        return targets
    finally:
        # Gone already on success; holds the old entry after an exchange. An old entry that was a
        # symlink is removed as a link: the folder it pointed at is the user's, and stays.
        for staging in stagings:
            if staging.is_symlink():
                staging.unlink()
            else:
                shutil.rmtree(staging, ignore_errors=True)


def _stage(staging: Path, entry: _Entry) -> None:
    """Write ``entry``'s files into the folder ``staging``; InputError when the disk refuses or the ONNX does not load."""
    try:
        for relative, content in entry.files.items():
            path = staging / relative
            if relative.endswith("/"):
                path.mkdir(parents=True, exist_ok=True)  # a folder only
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, Path):
                shutil.copyfile(content, path)
            else:
                path.write_text(content)
        os.chmod(staging, 0o755)
    except OSError as exc:
        raise InputError(f"cannot stage {entry.name} ({exc.strerror or exc}).", "check free space and permissions of the --triton folder") from None
    if entry.check is not None:
        check_loads(staging / entry.check)


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
