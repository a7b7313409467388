"""A CPU-side check that TensorRT's ONNX parser will accept a model (no TensorRT needed).

Rules, each named so a failure can say which one it broke:

- ``opset``: the default-domain opset is within what TensorRT 10 and 11 both parse (9..24).
- ``op-supported``: no operator TensorRT's parser lacks (ConvInteger, MatMulInteger,
  DynamicQuantizeLinear, QLinearConv, ...) and no operator from a custom domain.
- ``lrn-window``: LRN ``size`` is odd and within 1..15; ``beta`` within 0.01..1e5 and
  ``bias`` within 1e-5..1e10 (ILRNLayer's limits).
- ``qdq-zero-point``: every QuantizeLinear/DequantizeLinear zero point is 0 (TensorRT
  quantization is symmetric).
- ``qdq-uint8``: no UINT8 Q/DQ (TensorRT rejects UINT8 quantized tensors).
- ``qdq-int32``: no DequantizeLinear of INT32 data (what INT32 bias quantization makes).
- ``qdq-scale``: scales are constant and strictly positive; activations per-tensor.
- ``dynamic-dims``: only the batch dimension (the first) of inputs may be dynamic.

Sources: onnx-tensorrt's operator matrix and Q/DQ importer, TensorRT's ILRNLayer limits and
ONNX opset guide (see ../shared/notes/tensorrt-ort-triton.md, sections 1.2, 2.1, 2.4).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

OPSET_RANGE = (9, 24)  # TensorRT 10.x parses 9..24 (11.x: 9..25); the export writes 18..23
# Operators onnx-tensorrt's support matrix lists as unsupported.
UNSUPPORTED_OPS = frozenset({
    "BitShift", "BitwiseAnd", "BitwiseNot", "BitwiseOr", "BitwiseXor", "Col2Im", "Compress", "ConcatFromSequence",
    "ConvInteger", "Det", "DFT", "DynamicQuantizeLinear", "MatMulInteger", "MaxRoiPool", "MaxUnpool", "Multinomial",
    "NegativeLogLikelihoodLoss", "Optional", "OptionalGetElement", "OptionalHasElement", "QLinearConv", "QLinearMatMul",
    "SequenceAt", "SequenceConstruct", "SequenceEmpty", "SequenceErase", "SequenceInsert", "SequenceLength",
    "SoftmaxCrossEntropyLoss", "SplitToSequence", "StringNormalizer", "TfIdfVectorizer", "Unique",
})
LRN_SIZE = (1, 15)
LRN_BETA = (0.01, 1e5)
LRN_BIAS = (1e-5, 1e10)


@dataclass(frozen=True)
class LintFinding:
    """One broken rule at one place in the graph."""

    rule: str
    node: str
    message: str

    def __str__(self) -> str:
        return f"[{self.rule}] {self.node}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _attr(node, name, default=None):
    import onnx

    for attribute in node.attribute:
        if attribute.name == name:
            return onnx.helper.get_attribute_value(attribute)
    return default


def _constants(proto) -> dict[str, np.ndarray]:
    """Initializers and Constant-node outputs by tensor name."""
    from onnx import numpy_helper

    values = {init.name: numpy_helper.to_array(init) for init in proto.graph.initializer}
    for node in proto.graph.node:
        if node.op_type == "Constant" and node.output:
            value = _attr(node, "value")
            if value is not None:
                values[node.output[0]] = numpy_helper.to_array(value)
                continue
            for name, dtype in (("value_float", np.float32), ("value_floats", np.float32), ("value_int", np.int64), ("value_ints", np.int64)):
                scalar = _attr(node, name)
                if scalar is not None:
                    values[node.output[0]] = np.asarray(scalar, dtype=dtype)
                    break
    return values


def _elem_types(proto) -> dict[str, int]:
    """Element type of every tensor whose type is known (inputs, outputs, value_info, initializers)."""
    types = {init.name: init.data_type for init in proto.graph.initializer}
    for info in list(proto.graph.input) + list(proto.graph.output) + list(proto.graph.value_info):
        if info.type.HasField("tensor_type"):
            types[info.name] = info.type.tensor_type.elem_type
    return types


def _name(node, index: int) -> str:
    return node.name or f"{node.op_type}#{index}"


def lint_onnx(proto) -> list[LintFinding]:
    """Every place where ``proto`` (an onnx ModelProto) breaks a rule above; empty when it should parse."""
    findings: list[LintFinding] = []
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None or not OPSET_RANGE[0] <= opset <= OPSET_RANGE[1]:
        findings.append(LintFinding("opset", "model", f"default-domain opset {opset} is outside {OPSET_RANGE[0]}..{OPSET_RANGE[1]}; re-export with --opset 18"))

    initializers = {init.name for init in proto.graph.initializer}
    for graph_input in proto.graph.input:
        if graph_input.name in initializers:
            continue
        dims = graph_input.type.tensor_type.shape.dim
        for axis, dim in enumerate(dims):
            if axis > 0 and not dim.HasField("dim_value"):
                label = dim.dim_param or "?"
                findings.append(LintFinding("dynamic-dims", graph_input.name, f"dimension {axis} is dynamic ({label}); only the batch dimension may be; re-export with a fixed input size"))

    constants = _constants(proto)
    types = _elem_types(proto)
    # A weight quantized in the graph (constant -> QuantizeLinear -> DequantizeLinear) counts as a constant.
    weights = set(constants) | {n.output[0] for n in proto.graph.node if n.op_type == "QuantizeLinear" and n.input[0] in constants}
    for index, node in enumerate(proto.graph.node):
        name = _name(node, index)
        if node.domain not in ("", "ai.onnx"):
            findings.append(LintFinding("op-supported", name, f"{node.domain}::{node.op_type} is a custom-domain op that TensorRT's ONNX parser does not know"))
            continue
        if node.op_type in UNSUPPORTED_OPS:
            hint = "; quantize with --precision int8 --target tensorrt (static Q/DQ)" if node.op_type in {"DynamicQuantizeLinear", "MatMulInteger", "ConvInteger", "QLinearConv", "QLinearMatMul"} else ""
            findings.append(LintFinding("op-supported", name, f"{node.op_type} is not supported by TensorRT's ONNX parser{hint}"))
        if node.op_type == "LRN":
            findings += _lint_lrn(node, name)
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            findings += _lint_qdq(node, name, constants, types, weights)
    return findings


def _lint_lrn(node, name: str) -> list[LintFinding]:
    out = []
    size = _attr(node, "size")
    beta = _attr(node, "beta", 0.75)
    bias = _attr(node, "bias", 1.0)
    if size is None or size % 2 == 0 or not LRN_SIZE[0] <= size <= LRN_SIZE[1]:
        out.append(LintFinding("lrn-window", name, f"LRN size {size} must be odd and within {LRN_SIZE[0]}..{LRN_SIZE[1]}"))
    if not LRN_BETA[0] <= beta <= LRN_BETA[1]:
        out.append(LintFinding("lrn-window", name, f"LRN beta {beta:g} must be within {LRN_BETA[0]:g}..{LRN_BETA[1]:g}"))
    if not LRN_BIAS[0] <= bias <= LRN_BIAS[1]:
        out.append(LintFinding("lrn-window", name, f"LRN bias {bias:g} must be within {LRN_BIAS[0]:g}..{LRN_BIAS[1]:g}"))
    return out


def _lint_qdq(node, name: str, constants: dict[str, np.ndarray], types: dict[str, int], weights: set[str]) -> list[LintFinding]:
    import onnx

    out = []
    data, scale_name = node.input[0], node.input[1]
    zero_name = node.input[2] if len(node.input) > 2 else ""
    scale = constants.get(scale_name)
    if scale is None:
        out.append(LintFinding("qdq-scale", name, f"scale {scale_name} is not a constant"))
    elif not (np.asarray(scale) > 0).all():
        out.append(LintFinding("qdq-scale", name, "scales must be strictly positive"))
    elif np.asarray(scale).size > 1 and data not in weights:
        out.append(LintFinding("qdq-scale", name, "per-channel scales on an activation; TensorRT quantizes activations per tensor"))
    if zero_name:
        zero = constants.get(zero_name)
        if zero is None:
            out.append(LintFinding("qdq-zero-point", name, f"zero point {zero_name} is not a constant"))
        else:
            if zero.dtype == np.uint8:
                out.append(LintFinding("qdq-uint8", name, "UINT8 quantization; TensorRT takes INT8 only: quantize with --target tensorrt"))
            if np.asarray(zero).any():
                out.append(LintFinding("qdq-zero-point", name, "non-zero zero point (asymmetric); TensorRT quantization is symmetric: quantize with --target tensorrt"))
    if node.op_type == "DequantizeLinear":
        data_type = constants[data].dtype if data in constants else None
        elem = types.get(data)
        if data_type == np.int32 or elem == onnx.TensorProto.INT32:
            out.append(LintFinding("qdq-int32", name, "DequantizeLinear of INT32 data (an INT32-quantized bias); TensorRT accepts only INT8 here: quantize with --target tensorrt"))
        if data_type == np.uint8 or elem == onnx.TensorProto.UINT8:
            if not any(f.rule == "qdq-uint8" for f in out):
                out.append(LintFinding("qdq-uint8", name, "UINT8 quantized data; TensorRT takes INT8 only: quantize with --target tensorrt"))
    return out
