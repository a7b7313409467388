"""Building TensorRT engines from a verified ONNX file (TensorRT 10 and 11).

One code path serves both majors: a strongly typed network (precision comes from the ONNX:
FP32, an FP16 graph, INT8 Q/DQ; no precision builder flags, which TensorRT 11 removed).
The engine is written atomically next to a sidecar JSON (``MODEL.engine.json``, see
``alexnet_deploy.runtimes.tensorrt``) that records what it needs to run, so loading it
elsewhere fails with a clear message instead of a crash inside TensorRT. The CPU-side lint
(``alexnet_deploy.build.lint``) runs first.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from alexnet_deploy.errors import CheckFailed, InputError
from alexnet_deploy.runtimes.tensorrt import EngineSidecar, cuda_device, sidecar_path, tensorrt_module


@dataclass
class BatchProfile:
    """The optimization profile over the batch dimension: kernels tuned for ``opt``, valid for min..max."""

    min: int = 1
    opt: int = 32
    max: int = 128

    def validated(self, fixed_batch: int | None = None) -> "BatchProfile":
        """This profile checked against the ONNX input (a fixed batch N forces N/N/N)."""
        if fixed_batch is not None:
            if (self.min, self.opt, self.max) not in ((fixed_batch,) * 3, (1, 32, 128)):
                raise InputError(
                    f"the ONNX model has a fixed batch of {fixed_batch}, so the profile cannot be {self.min}/{self.opt}/{self.max}.",
                    "drop --min-batch/--opt-batch/--max-batch, or re-export with --batch dynamic",
                )
            return BatchProfile(fixed_batch, fixed_batch, fixed_batch)
        if not 1 <= self.min <= self.opt <= self.max:
            raise InputError(f"batch profile {self.min}/{self.opt}/{self.max} must satisfy 1 <= min <= opt <= max.", "e.g. --min-batch 1 --opt-batch 32 --max-batch 128")
        return self


def new_network(trt, builder):
    """A strongly typed network on TensorRT 10 and 11 (11 is always strongly typed; its flag is deprecated)."""
    flags = 0
    if int(trt.__version__.split(".")[0]) < 11:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return builder.create_network(flags)


def parser_errors(parser) -> list[str]:
    """The ONNX parser's errors as lines naming the node and operator."""
    lines = []
    for index in range(parser.num_errors):
        error = parser.get_error(index)
        node = error.node_name() or f"node #{error.node()}"
        lines.append(f"{node} ({error.node_operator()}): {error.desc()}")
    return lines


@dataclass
class BuildResult:
    """What ``build_engine`` did: the lint findings and, unless only checking, the engine written."""

    onnx: Path
    findings: list
    engine: Path | None = None
    sidecar: EngineSidecar | None = None
    timing_cache: Path | None = None
    seconds: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "onnx": str(self.onnx),
            "lint": [f.to_dict() for f in self.findings],
            "engine": str(self.engine) if self.engine else None,
            "sidecar": self.sidecar.to_dict() if self.sidecar else None,
            "timing_cache": str(self.timing_cache) if self.timing_cache else None,
            "seconds": self.seconds,
        }


def build_engine(
    onnx_path: Path,
    output: Path | None = None,
    profile: BatchProfile | None = None,
    timing_cache: Path | None = None,
    workspace_mb: int | None = None,
    check_only: bool = False,
    progress=None,
) -> BuildResult:
    """Lint ``onnx_path`` for TensorRT and, unless ``check_only``, build and write an engine.

    Raises CheckFailed when the lint finds problems (nothing is built), DependencyError
    when TensorRT or a GPU is missing, InputError for bad options or files.
    """
    import time

    from alexnet_deploy.record import read_record_or_none
    from alexnet_deploy.record import graph_precision
    from alexnet_deploy.fileio import atomic_write_bytes, check_writable, sha256_file
    from alexnet_deploy.onnx_file import fixed_batch, load_onnx
    from alexnet_deploy.progress import as_progress
    from alexnet_deploy.build.lint import lint_onnx

    progress = as_progress(progress)
    onnx_path = Path(onnx_path)
    progress("reading the ONNX model")
    proto = load_onnx(onnx_path)
    output = Path(output) if output is not None else onnx_path.with_suffix(".engine")
    if not check_only:
        check_writable(output, "engine")
        check_writable(sidecar_path(output), "engine sidecar")  # its name is longer: it must not fail after minutes of building
        if timing_cache is not None:
            check_writable(Path(timing_cache), "timing cache")
    if workspace_mb is not None and workspace_mb < 1:
        raise InputError(f"--workspace-mb {workspace_mb} must be at least 1.", "e.g. --workspace-mb 2048")
    profile = (profile or BatchProfile()).validated(fixed_batch(proto))
    progress("checking TensorRT compatibility")
    findings = lint_onnx(proto)
    result = BuildResult(onnx_path, findings)
    if findings:
        first = findings[0]
        raise CheckFailed(
            f"{onnx_path} will not build with TensorRT: {len(findings)} problem(s); first: {first}",
            "see them all with `alexnet build --check-only`" if not check_only else None,
        )
    if check_only:
        return result

    trt = tensorrt_module()
    gpu_name, capability = cuda_device()
    record = read_record_or_none(proto, str(onnx_path))
    input_info = proto.graph.input[0]
    chw = [d.dim_value for d in input_info.type.tensor_type.shape.dim[1:]]
    precision = record.precision if record else (graph_precision(proto) or "fp32")
    del proto

    started = time.perf_counter()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = new_network(trt, builder)
    parser = trt.OnnxParser(network, logger)
    progress("parsing the ONNX model with TensorRT")
    if not parser.parse_from_file(str(onnx_path)):
        errors = parser_errors(parser)
        raise CheckFailed(f"TensorRT's ONNX parser rejected {onnx_path}: {errors[0] if errors else 'no details'}" + (f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""), "fix the graph (alexnet build --check-only lints it) or report it with --debug")
    config = builder.create_builder_config()
    if workspace_mb:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    optimization = builder.create_optimization_profile()
    name = network.get_input(0).name
    optimization.set_shape(name, (profile.min, *chw), (profile.opt, *chw), (profile.max, *chw))
    config.add_optimization_profile(optimization)
    if timing_cache is not None:
        blob = Path(timing_cache).read_bytes() if Path(timing_cache).is_file() else b""
        if not config.set_timing_cache(config.create_timing_cache(blob), False):
            progress(f"{timing_cache} does not fit this TensorRT/GPU; building without it")
    progress(f"building the engine on {gpu_name} (minutes for a first build)")
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise CheckFailed(f"TensorRT could not build an engine from {onnx_path} (see the messages above).", "rerun with --debug, or lower --max-batch / raise --workspace-mb")
    sidecar = EngineSidecar(
        tensorrt_version=trt.__version__,
        gpu_name=gpu_name,
        compute_capability=capability,
        precision=precision,
        profile=asdict(profile),
        input_name=name,
        output_name=network.get_output(0).name,
        input_shape=chw,
        labels=list(record.labels) if record else [],
        preprocessing=asdict(record.preprocessing) if record else {},
        source_onnx=str(onnx_path),
        source_onnx_sha256=sha256_file(onnx_path),
        toolkit_version=_toolkit_version(),
    )
    data = bytes(memoryview(plan))
    sidecar.engine_sha256 = hashlib.sha256(data).hexdigest()  # pairs this sidecar with exactly this engine
    sidecar_path(output).unlink(missing_ok=True)
    atomic_write_bytes(output, data)
    atomic_write_bytes(sidecar_path(output), (json.dumps(sidecar.to_dict(), indent=2) + "\n").encode())
    if timing_cache is not None:
        atomic_write_bytes(Path(timing_cache), bytes(memoryview(config.get_timing_cache().serialize())))
    result.engine, result.sidecar, result.timing_cache = output, sidecar, timing_cache
    result.seconds = time.perf_counter() - started
    return result


def _toolkit_version() -> str:
    from alexnet_deploy import __version__

    return __version__


