"""OpenVINO on the CPU: our FP32, FP16 and INT8 ONNX files run as they are, plus BF16 at run time.

Precision is explicit. OpenVINO computes in BF16 by default on CPUs that have it, so an
"FP32" run would silently be BF16: here every file runs at ``INFERENCE_PRECISION_HINT=f32``
unless ``precision="bf16"`` asks for BF16 (from the FP32 file, only on CPUs with native
BF16). ``info().precision`` is read back from the execution graph (the precision the
convolutions and fully connected layers really ran in), never assumed from the request.

Shapes: a dynamic-batch model is compiled once per batch size seen (static shapes let
OpenVINO pick faster kernels) and cached; beyond ``MAX_STATIC_SHAPES`` sizes one dynamic
compilation serves the rest.

Threads: one compiled model per shape, one infer request per thread (``CompiledModel``'s
own ``__call__`` shares a single request, which is not thread-safe), so one instance can be
shared by threads. ``infer`` releases the GIL.
"""

from __future__ import annotations

import tempfile
import threading
from collections import Counter
from pathlib import Path

import numpy as np

from alexnet_deploy.errors import DependencyError, InputError, RuntimeFailure, require
from alexnet_deploy.runtimes.base import Runtime, RuntimeInfo

MAX_STATIC_SHAPES = 8
# The layers that carry AlexNet's FLOPs: their runtime precision is the precision that ran.
_HEAVY = {"Convolution", "FullyConnected", "MatMul", "Gemm"}
_OV_TO_OURS = {"f32": "fp32", "bf16": "bf16", "f16": "fp16", "i8": "int8", "u8": "int8"}


def _openvino():
    return require("openvino", "openvino", "The openvino runtime")


def _file_precision(path: Path) -> str:
    """fp32/fp16/int8/int8-dynamic from the file's alexnet-deploy record, else from its graph.

    (The graph test is a small copy of quantize.recipes.graph_precision: runtimes sit below
    the quantize stage and do not import it.)
    """
    from alexnet_deploy.onnx_file import load_onnx
    from alexnet_deploy.record import read_record_or_none

    proto = load_onnx(path, load_weights=False)
    record = read_record_or_none(proto, str(path))
    if record is not None:
        return record.precision
    ops = {node.op_type for node in proto.graph.node}
    if ops & {"DynamicQuantizeLinear", "MatMulInteger", "ConvInteger"}:
        return "int8-dynamic"
    if ops & {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul"}:
        return "int8"
    return "fp16" if any(init.data_type == 10 for init in proto.graph.initializer) else "fp32"  # 10: onnx.TensorProto.FLOAT16


def bf16_problem() -> str | None:
    """Why ``precision='bf16'`` is refused on this CPU (one line), or None when it is offered."""
    from alexnet_deploy.runtimes.cpu import bf16_problem as cpu_bf16_problem

    ov = _openvino()
    return cpu_bf16_problem(list(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")))


class OpenVinoRuntime(Runtime):
    """An ONNX model (path or bytes) compiled by OpenVINO for the CPU.

    ``precision``: None runs what the file holds (FP32 as f32, FP16 weights computed in
    f32, INT8 Q/DQ in int8 with the rest in f32); ``"bf16"`` runs an FP32 file in BF16
    where the CPU has native BF16 (DependencyError saying why not elsewhere).
    ``threads``: OpenVINO's inference threads (default: its choice). ``hint``: LATENCY
    (one stream, all threads on one request; best for batch 1 and for one caller) or
    THROUGHPUT.
    """

    name = "openvino"

    def __init__(self, model: Path | str | bytes, precision: str | None = None, threads: int | None = None, hint: str = "LATENCY"):
        super().__init__()
        ov = _openvino()
        self._tmp = None
        if isinstance(model, bytes):  # OpenVINO reads ONNX from files: keep a private copy for the runtime's life
            self._tmp = tempfile.NamedTemporaryFile(suffix=".onnx")
            self._tmp.write(model)
            self._tmp.flush()
            path, self._label = Path(self._tmp.name), "<memory>"
        else:
            path, self._label = Path(model), Path(model).name
        self.file_precision = _file_precision(path)
        if precision not in (None, self.file_precision, "bf16"):
            raise InputError(f"{self._label} is {self.file_precision}; OpenVINO runs it as {self.file_precision} or, from an FP32 file, as bf16 (not {precision}).", f"drop the precision, or pass a {precision} file")
        if precision == "bf16":
            if self.file_precision != "fp32":
                raise InputError(f"bf16 is chosen at run time from the FP32 file; {self._label} is {self.file_precision}.", "pass the FP32 ONNX that `alexnet export` wrote")
            problem = bf16_problem()
            if problem:
                raise DependencyError(f"bf16 needs a CPU with AVX-512 BF16 or AMX: {problem}.", "use the FP32 (--runtime openvino) or INT8 model on this machine")
        self.requested = precision or self.file_precision
        self.core = ov.Core()
        try:
            self._model = self.core.read_model(str(path))
        except Exception as exc:
            raise InputError(f"OpenVINO cannot read {self._label} ({str(exc).splitlines()[0][:160]}).", "re-export it with `alexnet export`") from None
        self._config = {
            "PERFORMANCE_HINT": hint,
            # Explicit, because OpenVINO's CPU default is bf16 wherever the CPU has it.
            "INFERENCE_PRECISION_HINT": "bf16" if self.requested == "bf16" else "f32",
        }
        if threads:
            self._config["INFERENCE_NUM_THREADS"] = int(threads)
        port = self._model.inputs[0]
        self._input_name = port.get_any_name()
        shape = port.get_partial_shape()
        if shape.rank.get_length() != 4 or any(shape[i].is_dynamic for i in (1, 2, 3)):
            raise InputError(f"{self._label} has input shape {shape}; only the batch may be dynamic.", "re-export it with `alexnet export`")
        self._shape = tuple(None if d.is_dynamic else d.get_length() for d in shape)
        self._compiled: dict[int | None, object] = {}
        self._lock = threading.Lock()
        self._local = threading.local()
        # Compile once now, so a model OpenVINO cannot run fails here and info() can read the graph.
        self._first = self._compiled_for(self._shape[0] or 1)

    def _compiled_for(self, batch: int):
        """The compiled model for this batch size (compiled on first use, under a lock)."""
        key = batch if (self._shape[0] is not None or len(self._compiled) < MAX_STATIC_SHAPES or batch in self._compiled) else None
        compiled = self._compiled.get(key)
        if compiled is not None:
            return compiled
        with self._lock:
            compiled = self._compiled.get(key)
            if compiled is None:
                model = self._model
                if self._shape[0] is None and key is not None:
                    model = self._model.clone()
                    model.reshape({self._input_name: [key, *self._shape[1:]]})
                try:
                    compiled = self.core.compile_model(model, "CPU", self._config)
                except Exception as exc:
                    raise RuntimeFailure(f"OpenVINO could not compile {self._label} ({str(exc).splitlines()[0][:160]}).", "check the file with `alexnet verify`") from None
                self._compiled[key] = compiled
        return compiled

    def runtime_precisions(self) -> dict[str, str]:
        """layer type -> the precision its heavy layers ran in (from the execution graph), e.g. {'Convolution': 'bf16'}."""
        found: dict[str, Counter] = {}
        for op in self._first.get_runtime_model().get_ordered_ops():
            info = op.get_rt_info()
            kind = info["layerType"].astype(str)
            if kind in _HEAVY:
                found.setdefault(kind, Counter())[info["runtimePrecision"].astype(str).lower()] += 1
        return {kind: counts.most_common(1)[0][0] for kind, counts in found.items()}

    def _info_impl(self) -> RuntimeInfo:
        ov = _openvino()
        ran = self.runtime_precisions()
        hint = self._first.get_property("INFERENCE_PRECISION_HINT")
        hint = hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)
        compute = Counter(_OV_TO_OURS.get(p, p) for p in ran.values())
        # What ran: bf16 if any heavy layer ran in bf16, int8 if the convolutions ran in 8 bits,
        # else the file's precision (fp16 weights are computed in f32 on CPUs).
        if compute.get("bf16"):
            precision = "bf16"
        elif compute.get("int8"):
            precision = "int8"
        else:
            precision = self.file_precision if self.file_precision != "int8" else "fp32"
        return RuntimeInfo(
            runtime="openvino", device="cpu", precision=precision, input_name=self._input_name, input_shape=self._shape,
            min_batch=self._shape[0] or 1, max_batch=self._shape[0],
            details={
                "model": self._label, "openvino": ov.__version__, "file_precision": self.file_precision,
                "inference_precision_hint": hint, "runtime_precision": ran,
                "performance_hint": self._config["PERFORMANCE_HINT"], "threads": self._config.get("INFERENCE_NUM_THREADS"),
            },
        )

    def _request(self, batch: int):
        """This thread's infer request for this batch size's compiled model."""
        compiled = self._compiled_for(batch)
        requests = getattr(self._local, "requests", None)
        if requests is None:
            requests = self._local.requests = {}
        request = requests.get(id(compiled))
        if request is None:
            request = requests[id(compiled)] = compiled.create_infer_request()
        return request

    def _run_impl(self, batch: np.ndarray) -> np.ndarray:
        request = self._request(len(batch))
        try:
            request.infer({0: batch}, share_inputs=True)
        except Exception as exc:
            raise RuntimeFailure(f"OpenVINO failed to run {self._label} ({str(exc).splitlines()[0][:160]}).", "check the file with `alexnet verify`") from None
        return np.array(request.get_output_tensor(0).data, dtype=np.float32, copy=True)  # the request reuses its buffer

    def _close_impl(self) -> None:
        self._compiled.clear()
        self._first = None
        self._local = threading.local()
        if self._tmp is not None:
            self._tmp.close()
