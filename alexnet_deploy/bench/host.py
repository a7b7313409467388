"""What the host is and what it can do at most: CPU model, the ISA features that decide
AlexNet's numbers, and measured GEMM ceilings per precision.

A bench row's speed means little alone: INT8 is fast on a CPU with VNNI and not without,
BF16 only where the CPU has native BF16. So every report carries the host's features and
its own ceilings (a large GEMM in FP32, INT8 u8s8 and BF16, timed briefly, once per
process), and every row says what fraction of its precision's ceiling it reached.
"""

from __future__ import annotations

import functools
import platform
import time
from pathlib import Path

import numpy as np

from alexnet_deploy.runtimes.cpu import isa_features

GEMM_SIZE = 1024  # M = N = K: big enough for the kernels' peak, ~2 GFLOP a call
# Which ceiling bounds which row precision: FP16 files compute in FP32 on CPUs without
# AVX-512 FP16, and int8-dynamic runs its matmuls in u8s8.
CEILING_FOR = {"fp32": "fp32", "fp16": "fp32", "bf16": "bf16", "int8": "int8", "int8-dynamic": "int8"}


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (or platform's guess)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def isa_line(features: dict[str, bool] | None = None) -> str:
    """'AVX2 yes, AVX-512 yes, VNNI yes, BF16 yes, AMX no'."""
    features = features or isa_features()
    names = {"avx2": "AVX2", "avx512": "AVX-512", "vnni": "VNNI", "bf16": "BF16", "amx": "AMX"}
    return ", ".join(f"{names[k]} {'yes' if v else 'no'}" for k, v in features.items())


def _median_seconds(run, budget_s: float, min_runs: int = 5) -> float:
    """Median of repeated calls within ``budget_s`` (after one warm-up).

    The median, not the best: on a shared machine a lucky call can land on an idle core
    and the best of a few would compare a quiet moment with busy ones; rows are compared
    by their typical figures too.
    """
    run()
    times: list[float] = []
    end = time.perf_counter() + budget_s
    while time.perf_counter() < end or len(times) < min_runs:
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


GEMM_IR_VERSION = 8


def _ort_gemm(op: str, threads: int | None):
    """An onnxruntime session computing one GEMM: MatMul (FP32) or MatMulInteger (u8 x s8 -> s32)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    n = GEMM_SIZE
    integer = op == "MatMulInteger"
    a_type, b_type = (TensorProto.UINT8, TensorProto.INT8) if integer else (TensorProto.FLOAT, TensorProto.FLOAT)
    graph = helper.make_graph(
        [helper.make_node(op, ["a", "b"], ["y"])], "gemm",
        [helper.make_tensor_value_info("a", a_type, [n, n]), helper.make_tensor_value_info("b", b_type, [n, n])],
        [helper.make_tensor_value_info("y", TensorProto.INT32 if integer else TensorProto.FLOAT, [n, n])],
    )
    # onnx stamps its own newest IR version by default, which an older onnxruntime refuses
    # ("Unsupported model IR version: 14, max supported IR version: 13" on 1.30): IR 8 is
    # what opset 17 needs, and every onnxruntime we support (>= 1.18) reads it.
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=GEMM_IR_VERSION)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = int(threads)
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    if integer:
        feeds = {"a": rng.integers(0, 255, (n, n), dtype=np.uint8), "b": rng.integers(-127, 127, (n, n), dtype=np.int8)}
    else:
        feeds = {"a": rng.standard_normal((n, n), dtype=np.float32), "b": rng.standard_normal((n, n), dtype=np.float32)}
    return lambda: session.run(None, feeds)


def _openvino_gemm(precision: str, threads: int | None):
    """OpenVINO compiling one MatMul: f32, bf16 (inference precision bf16) or int8 (FakeQuantize
    on both operands, which its CPU plugin runs as a u8 x s8 GEMM, VNNI where present)."""
    import openvino as ov

    ops = ov.opset13
    n = GEMM_SIZE
    rng = np.random.default_rng(0)
    a = ops.parameter([n, n], ov.Type.f32, name="a")
    b = ops.constant(rng.standard_normal((n, n), dtype=np.float32))
    left, right = a, b
    if precision == "int8":
        def fq(node, low, high, levels):
            c = lambda v: ops.constant(np.float32(v))  # noqa: E731
            return ops.fake_quantize(node, c(low), c(high), c(low), c(high), levels)

        left, right = fq(a, 0.0, 4.0, 256), fq(b, -4.0, 4.0, 255)
    model = ov.Model([ops.matmul(left, right, False, False)], [a], "gemm")
    config = {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32", "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    request = ov.Core().compile_model(model, "CPU", config).create_infer_request()
    x = np.abs(rng.standard_normal((n, n), dtype=np.float32))
    return lambda: request.infer({0: x})


@functools.lru_cache(maxsize=8)
def gemm_ceilings(threads: int | None = None, budget_s: float = 0.4, rounds: int = 3) -> dict[str, dict]:
    """Measured GEMM GFLOP/s per precision on this host with ``threads`` threads (cached per process).

    fp32: onnxruntime or OpenVINO MatMul; int8: onnxruntime MatMulInteger or OpenVINO's
    quantized MatMul (u8 x s8, VNNI where present); bf16: OpenVINO MatMul in bf16, only where
    the CPU has native BF16 and openvino is installed. The faster kernel of each sets the ceiling.
    Every kernel is timed in ``rounds`` short rounds taken in turn (``budget_s`` split among
    them); its figure is the best round's median, so a burst of load from other processes on a
    shared machine lowers one round, not the ceiling.
    """
    from alexnet_deploy.runtimes.cpu import bf16_problem

    flops = 2.0 * GEMM_SIZE**3
    kernels = [
        ("fp32", "onnxruntime MatMul", lambda: _ort_gemm("MatMul", threads)),
        ("fp32", "OpenVINO MatMul f32", lambda: _openvino_gemm("fp32", threads)),
        ("int8", "onnxruntime MatMulInteger u8s8", lambda: _ort_gemm("MatMulInteger", threads)),
        ("int8", "OpenVINO FakeQuantize MatMul u8s8", lambda: _openvino_gemm("int8", threads)),
    ]
    if bf16_problem() is None:
        kernels.append(("bf16", "OpenVINO MatMul bf16", lambda: _openvino_gemm("bf16", threads)))
    runs = []
    for precision, how, make in kernels:
        try:
            runs.append((precision, how, make()))
        except ImportError:
            continue  # OpenVINO not installed: the other kernel's figure, or no ceiling rather than a wrong one
    best: dict[tuple[str, str], float] = {}
    for _ in range(rounds):
        for precision, how, run in runs:
            seconds = _median_seconds(run, budget_s / rounds, min_runs=3)
            best[precision, how] = max(best.get((precision, how), 0.0), flops / seconds / 1e9)
    ceilings: dict[str, dict] = {}
    for (precision, how), gflops in best.items():
        if gflops > ceilings.get(precision, {}).get("gflops", 0.0):
            ceilings[precision] = {"gflops": gflops, "how": f"{how}, {GEMM_SIZE}^3"}
    return ceilings


def host_info(threads: int | None, measure: bool = True) -> dict:
    """The host block of every report: ISA features (and the line), ceilings, their ratios."""
    features = isa_features()
    info = {"isa": features, "isa_line": isa_line(features)}
    if measure:
        ceilings = gemm_ceilings(threads)
        info["ceilings"] = ceilings
        fp32 = ceilings.get("fp32", {}).get("gflops")
        # The host's own INT8/BF16 speedup at most: compare a row's speedup with this, not with another machine's.
        info["ceiling_ratios"] = {p: c["gflops"] / fp32 for p, c in ceilings.items() if fp32 and p != "fp32"}
    return info


@functools.lru_cache(maxsize=32)
def model_flops(path: str) -> float | None:
    """FLOPs (multiply-add = 2) of one image through an ONNX model's Conv/Gemm/MatMul layers.

    Counted from the graph with shapes inferred at batch 1; None if shapes cannot be inferred.
    Q/DQ and FP16 files count the same FLOPs as their FP32 source.
    """
    from onnx import shape_inference

    from alexnet_deploy.onnx_file import load_onnx

    proto = load_onnx(Path(path), load_weights=False)
    graph_input = proto.graph.input[0]
    dims = graph_input.type.tensor_type.shape.dim
    if dims and not dims[0].HasField("dim_value"):
        dims[0].dim_value = 1
    batch = dims[0].dim_value or 1
    init_shapes = {i.name: list(i.dims) for i in proto.graph.initializer}
    try:
        inferred = shape_inference.infer_shapes(proto)
    except Exception:
        return None
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in list(inferred.graph.value_info) + list(inferred.graph.output) + list(inferred.graph.input)}
    shapes.update(init_shapes)
    # Q/DQ graphs hold the weights behind a DequantizeLinear: follow it back to the initializer.
    producer = {out: node for node in proto.graph.node for out in node.output}

    def weight_shape(name):
        while name not in init_shapes and name in producer and producer[name].op_type in ("DequantizeLinear", "Cast", "Transpose"):
            name = producer[name].input[0]
        return shapes.get(name)

    total = 0.0
    for node in proto.graph.node:
        out = shapes.get(node.output[0])
        if node.op_type == "Conv":
            w = weight_shape(node.input[1])
            if not w or not out or len(out) != 4:
                return None
            total += 2.0 * np.prod(out[1:]) * np.prod(w[1:])
        elif node.op_type in ("Gemm", "MatMul"):
            w = weight_shape(node.input[1])
            if not w or not out:
                return None
            k = w[1] if (node.op_type == "Gemm" and any(a.name == "transB" and a.i for a in node.attribute)) else w[0]
            total += 2.0 * np.prod(out[1:]) * k
    return total / batch
