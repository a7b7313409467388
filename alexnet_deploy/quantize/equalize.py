"""Cross-layer equalization and bias correction of an FP32 ONNX graph, before quantizing it.

Cross-layer equalization (Nagel et al., arXiv:1906.04721): for two layers joined only by
ops that commute with a positive per-channel scale (ReLU, MaxPool, AveragePool, Flatten,
Dropout, Identity), ``W1[i] /= s_i; b1[i] /= s_i; W2[:, i] *= s_i`` leaves the function
unchanged. ``s_i = sqrt(r1_i / r2_i)`` (r = per-channel max |w|) makes both layers' channel
ranges equal, so one per-tensor activation scale no longer has to cover an outlier channel
and per-channel weight scales lose less. LRN mixes channels and is not 1-homogeneous, so it
ends a pair, as does any other op.

Bias correction here is the weight part of empirical bias correction: the expected output
error of a layer from quantizing its weights is ``(Wq - W) E[x]``, with ``E[x]`` the mean
input per channel measured on calibration images; subtracting it from the bias removes the
shift that per-channel rounding adds to every output.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LAYER_OPS = ("Conv", "Gemm")
# Ops with f(s * x) = s * f(x) per channel for s > 0, that keep channels apart.
PASS_THROUGH = ("Relu", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Dropout", "Identity")
MAX_SWEEPS = 20
TOLERANCE = 1e-4  # the equalized FP32 graph must match the original to this (relative to the logit scale)


@dataclass
class Pair:
    """Two layers whose channels can be rescaled against each other."""

    first: object  # NodeProto
    second: object
    block: int  # columns of the second layer per channel of the first (Flatten into Gemm), else 1
    via: list[str]

    @property
    def name(self) -> str:
        return f"{self.first.name}->{self.second.name}"


def _attr(node, name: str, default):
    from onnx import helper

    for attribute in node.attribute:
        if attribute.name == name:
            return helper.get_attribute_value(attribute)
    return default


def _plain_layer(node, initializers) -> bool:
    """A Conv (group 1) or Gemm (alpha = beta = 1) whose weights (and bias) are initializers."""
    if node.op_type not in LAYER_OPS or len(node.input) < 2 or node.input[1] not in initializers:
        return False
    if len(node.input) > 2 and node.input[2] and node.input[2] not in initializers:
        return False
    if node.op_type == "Conv":
        return _attr(node, "group", 1) == 1
    return _attr(node, "alpha", 1.0) == 1.0 and _attr(node, "beta", 1.0) == 1.0 and _attr(node, "transA", 0) == 0


def find_pairs(proto) -> list[Pair]:
    """Consecutive Conv/Gemm pairs joined only by scale-commuting ops, each tensor used once."""
    graph = proto.graph
    initializers = {t.name: t for t in graph.initializer}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}
    uses = {name: len(nodes) for name, nodes in consumers.items()}
    pairs = []
    for node in graph.node:
        if not _plain_layer(node, initializers) or any(uses.get(n, 0) != 1 for n in node.input[1:] if n):
            continue
        tensor, via, flattened = node.output[0], [], False
        while True:
            following = consumers.get(tensor, [])
            if tensor in outputs or len(following) != 1:
                break
            nxt = following[0]
            if nxt.op_type in PASS_THROUGH or (nxt.op_type == "Flatten" and _attr(nxt, "axis", 1) == 1):
                flattened |= nxt.op_type == "Flatten"
                via.append(nxt.op_type)
                tensor = nxt.output[0]
                continue
            if _plain_layer(nxt, initializers) and nxt.input[0] == tensor and all(uses.get(n, 0) == 1 for n in nxt.input[1:] if n):
                channels = _out_channels(node, initializers)
                width = _in_width(nxt, initializers)
                if nxt.op_type == "Conv" and (flattened or width != channels):
                    break
                if nxt.op_type == "Gemm" and (width % channels or (width != channels and not flattened)):
                    break
                pairs.append(Pair(node, nxt, width // channels, via))
            break
    return pairs


def _weights(node, initializers) -> np.ndarray:
    from onnx import numpy_helper

    return numpy_helper.to_array(initializers[node.input[1]])


def _out_axis(node) -> int:
    return 1 if node.op_type == "Gemm" and _attr(node, "transB", 0) == 0 else 0


def _in_axis(node) -> int:
    if node.op_type == "Conv":
        return 1  # W is [out, in, kh, kw]
    return 1 if _attr(node, "transB", 0) == 1 else 0  # Gemm transB=1: B is [out, in]; transB=0: [in, out]


def _shape(node, initializers) -> tuple[int, ...]:
    """The weight's shape, from the initializer's dims (no copy of its data)."""
    return tuple(initializers[node.input[1]].dims)


def _out_channels(node, initializers) -> int:
    return _shape(node, initializers)[_out_axis(node)]


def _in_width(node, initializers) -> int:
    return _shape(node, initializers)[_in_axis(node)]


def _along(vector: np.ndarray, axis: int, ndim: int) -> np.ndarray:
    """``vector`` shaped to broadcast along ``axis`` of an ``ndim``-dimensional array."""
    shape = [1] * ndim
    shape[axis] = -1
    return vector.reshape(shape)


def _others(axis: int, ndim: int) -> tuple[int, ...]:
    return tuple(a for a in range(ndim) if a != axis)


def equalize(proto) -> tuple[object, list[dict]]:
    """(an equalized copy of the FP32 ``proto``, one entry per equalized pair with its scale range).

    Sweeps every pair in graph order until the scales settle (each sweep changes the
    ranges the neighbouring pairs see).
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.ModelProto()
    model.CopyFrom(proto)
    pairs = find_pairs(model)
    if not pairs:
        return model, []
    initializers = {t.name: t for t in model.graph.initializer}
    layers = {node.name: node for pair in pairs for node in (pair.first, pair.second)}
    # A sweep only needs each channel's range, so the weights are not rewritten per sweep: each
    # layer keeps |W| and its accumulated scales, and the equalized weight is
    # W * in_scale (along its input axis) / out_scale (along its output axis), written once at
    # the end. (Rescaling the float64 weights every sweep took 8 s on a 230 MB AlexNet.)
    magnitude = {name: np.abs(_weights(node, initializers)) for name, node in layers.items()}
    out_scale = {name: np.ones(_out_channels(node, initializers)) for name, node in layers.items()}
    in_scale = {name: np.ones(_in_width(node, initializers)) for name, node in layers.items()}

    def out_ranges(node) -> np.ndarray:  # max |W_equalized| per output channel
        w = magnitude[node.name]
        scaled = w * _along(in_scale[node.name].astype(np.float32), _in_axis(node), w.ndim)
        return scaled.max(axis=_others(_out_axis(node), w.ndim)) / out_scale[node.name]

    def in_ranges(node) -> np.ndarray:  # max |W_equalized| per input column
        w = magnitude[node.name]
        scaled = w / _along(out_scale[node.name].astype(np.float32), _out_axis(node), w.ndim)
        return scaled.max(axis=_others(_in_axis(node), w.ndim)) * in_scale[node.name]

    for _ in range(MAX_SWEEPS):
        largest = 0.0
        for pair in pairs:
            r1 = out_ranges(pair.first).astype(np.float64)
            channels = r1.shape[0]
            r2 = in_ranges(pair.second).astype(np.float64).reshape(channels, pair.block).max(axis=1)  # Flatten->Gemm: a channel's whole block
            scale = np.ones(channels)
            ok = (r1 > 0) & (r2 > 0)
            scale[ok] = np.sqrt(r1[ok] / r2[ok])
            out_scale[pair.first.name] *= scale
            in_scale[pair.second.name] *= np.repeat(scale, pair.block)
            largest = max(largest, float(np.abs(np.log(scale)).max()))
        if largest < 1e-3:
            break
    for name, node in layers.items():
        weights = _weights(node, initializers).astype(np.float64)
        weights *= _along(in_scale[name], _in_axis(node), weights.ndim)
        weights /= _along(out_scale[name], _out_axis(node), weights.ndim)
        initializers[node.input[1]].CopyFrom(numpy_helper.from_array(weights.astype(np.float32), node.input[1]))
        if len(node.input) > 2 and node.input[2]:  # the bias follows the output channels
            bias = numpy_helper.to_array(initializers[node.input[2]]).astype(np.float64) / out_scale[name]
            initializers[node.input[2]].CopyFrom(numpy_helper.from_array(bias.astype(np.float32), node.input[2]))
    report = [{"pair": pair.name, "via": pair.via, "scale_min": float(out_scale[pair.first.name].min()), "scale_max": float(out_scale[pair.first.name].max())}
              for pair in pairs]
    return model, report


def _with_outputs(proto, names: list[str]):
    import onnx
    from onnx import helper

    model = onnx.ModelProto()
    model.CopyFrom(proto)
    existing = {o.name for o in model.graph.output}
    for name in names:
        if name not in existing:
            model.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    return model


def _session(proto):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _chunks(session, batch: np.ndarray, chunk: int = 32):
    """(rows, feed) per chunk of ``batch``; a fixed-batch model gets full batches (the last one padded by repetition)."""
    info = session.get_inputs()[0]
    fixed = info.shape[0] if isinstance(info.shape[0], int) else None
    size = fixed or chunk
    for start in range(0, len(batch), size):
        part = batch[start:start + size]
        rows = len(part)
        if fixed and rows < fixed:
            part = np.concatenate([part, np.repeat(part[-1:], fixed - rows, axis=0)])
        yield rows, {info.name: part}


def run_logits(proto, batch: np.ndarray, chunk: int = 32) -> np.ndarray:
    """The first output of ``proto`` on ``batch`` (a bare onnxruntime session)."""
    session = _session(proto)
    return np.concatenate([session.run(None, feed)[0][:rows] for rows, feed in _chunks(session, batch, chunk)])


def check_equivalent(original, equalized, batch: np.ndarray) -> float:
    """max |logit difference| / max |logit| of the two FP32 graphs on ``batch`` (must be <= TOLERANCE)."""
    reference = run_logits(original, batch)
    changed = run_logits(equalized, batch)
    return float(np.abs(changed - reference).max() / max(float(np.abs(reference).max()), 1e-12))


def _quantized_weights(weights: np.ndarray, axis: int) -> np.ndarray:
    """Per-channel symmetric signed 8-bit rounding, as onnxruntime's QInt8 weights (scale = max|w| / 127)."""
    moved = np.moveaxis(weights, axis, 0)
    scale = np.abs(moved).reshape(moved.shape[0], -1).max(axis=1) / 127.0
    scale[scale == 0] = 1.0
    shape = (-1,) + (1,) * (moved.ndim - 1)
    return np.moveaxis(np.clip(np.round(moved / scale.reshape(shape)), -127, 127) * scale.reshape(shape), 0, axis)


def bias_correct(proto, batch: np.ndarray) -> tuple[object, list[str]]:
    """(a copy of ``proto`` with each layer's bias corrected for its weights' rounding, the corrected layers).

    ``E[x]`` per input channel is measured on ``batch`` at every layer at once (the input
    means of an FP32 graph do not depend on other layers' corrections). Padding is ignored,
    so border outputs keep a small share of the shift.
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.ModelProto()
    model.CopyFrom(proto)
    initializers = {t.name: t for t in model.graph.initializer}
    layers = [n for n in model.graph.node if _plain_layer(n, initializers) and len(n.input) > 2 and n.input[2]]
    if not layers:
        return model, []
    session = _session(_with_outputs(model, [n.input[0] for n in layers]))
    wanted = [n.input[0] for n in layers]
    sums: dict[str, np.ndarray] = {}
    for rows, feed in _chunks(session, batch):
        values = session.run(wanted, feed)
        for name, value in zip(wanted, values):
            value = value[:rows]
            axes = (0,) + tuple(range(2, value.ndim))
            mean = value.astype(np.float64).mean(axis=axes) * len(value)
            sums[name] = sums.get(name, 0) + mean
    corrected = []
    for node in layers:
        mean_in = sums[node.input[0]] / len(batch)
        weights = numpy_helper.to_array(initializers[node.input[1]]).astype(np.float64)
        error = _quantized_weights(weights, _out_axis(node)) - weights
        if node.op_type == "Conv":
            shift = error.reshape(error.shape[0], error.shape[1], -1).sum(axis=2) @ mean_in
        else:
            matrix = error if _attr(node, "transB", 0) == 1 else error.T  # [out, in]
            shift = matrix @ mean_in
        bias = numpy_helper.to_array(initializers[node.input[2]]).astype(np.float64)
        initializers[node.input[2]].CopyFrom(numpy_helper.from_array((bias - shift).astype(np.float32), node.input[2]))
        corrected.append(node.name)
    return model, corrected
