"""The graph transformations behind ``alexnet quantize``, each a thin call into onnxruntime's tools.

Precision is made here, in the ONNX file, so that onnxruntime on a CPU can check it and
TensorRT (which takes precision from the graph since version 11) only compiles it.

- fp16: onnxruntime's float16 converter with float32 graph inputs/outputs kept, and LRN
  blocked (its sum of squares overflows FP16's 65504 on post-ReLU activations).
- int8, target cpu: static per-channel Q/DQ, unsigned 8-bit activations and signed 8-bit
  weights on every op onnxruntime quantizes (the fastest recipe measured on x86 CPUs:
  BENCHMARKS.md).
- int8, target tensorrt: what TensorRT's ONNX parser accepts: symmetric signed 8-bit
  activations and weights (every zero point 0), per-channel weights, biases left in
  float (no INT32 DequantizeLinear), Q/DQ only on the inputs of Conv and Gemm, one Q/DQ
  pair per consumer.
- int8-dynamic: weight-only 8-bit Gemm/MatMul; convolutions stay float (dynamic
  quantization of AlexNet's convolutions is slower than FP32).
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path

from alexnet_deploy.errors import InputError
from alexnet_deploy.fileio import scratch_dir
from alexnet_deploy.runtimes.base import pad_rows

PRECISIONS = ("fp16", "int8", "int8-dynamic")
TARGETS = ("cpu", "tensorrt")
METHODS = ("minmax", "entropy", "percentile")
FP16_BLOCKED_OPS = ("LRN",)
_FP16 = "fp16: float16 weights and compute, float32 inputs/outputs, LRN kept float32"
_DYNAMIC = "int8 dynamic: per-channel s8 weights of Gemm/MatMul, activations quantized at run time"
RECIPES = {
    ("fp16", "cpu"): _FP16,
    ("fp16", "tensorrt"): _FP16,
    ("int8", "cpu"): "int8 static QDQ: per-channel s8 weights, u8 activations, all quantizable ops",
    ("int8", "tensorrt"): "int8 static QDQ for TensorRT: symmetric s8 activations and per-channel s8 weights (zero points 0), float bias, Q/DQ on Conv/Gemm inputs only",
    ("int8-dynamic", "cpu"): _DYNAMIC,
}


def to_fp16(proto):
    """An FP16 copy of an FP32 ModelProto with float32 I/O and LRN kept in float32."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    from onnxruntime.transformers.onnx_model import OnnxModel

    converted = convert_float_to_float16(proto, keep_io_types=True, op_block_list=list(FP16_BLOCKED_OPS))
    wrapper = OnnxModel(converted)
    wrapper.topological_sort()  # the converter appends its I/O Casts at the end; onnx.checker wants graph order
    return wrapper.model


def _preprocessed(source: Path, work: Path) -> Path:
    """onnxruntime's recommended pre-quantization pass (shape inference, graph cleanup)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    target = work / "preprocessed.onnx"
    try:
        quant_pre_process(str(source), str(target), skip_symbolic_shape=True)
    except Exception as exc:
        raise InputError(f"onnxruntime cannot prepare {source.name} for quantization ({str(exc).splitlines()[0][:160]}).", "re-export it with `alexnet export`") from None
    return target


# Images per collect_data call. The histogram calibrators keep every full activation of one
# call before histogramming (about 5 MB per image for AlexNet at 224 px), so this bounds memory.
CALIB_CHUNK = 32


class Calibration:
    """Calibration images, streamed: ``batches(order)`` yields lists of (index, CHW array).

    ``order`` is None (every image, in order) or a list of indices already known to decode.
    Implemented in quantize.py, which owns files and preprocessing; recipes.py only feeds them.
    """

    count: int  # images in the plan (some may fail to decode)

    def batches(self, batch: int, order=None):  # pragma: no cover - interface
        raise NotImplementedError


def _reader(batches, input_name: str, size: int, fixed: bool, fed: list[int], advance):
    """An onnxruntime CalibrationDataReader over ``batches``; appends each real image's index to ``fed``."""
    import numpy as np
    from onnxruntime.quantization import CalibrationDataReader

    class _Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter(batches)

        def get_next(self):
            rows = next(self._it, None)
            if rows is None:
                return None
            fed.extend(index for index, _ in rows)
            advance(len(rows))
            chunk = np.stack([array for _, array in rows])
            if fixed:  # a fixed-batch model: repeat the last image to fill the batch
                chunk = pad_rows(chunk, size)
            return {input_name: chunk}

    return _Reader()


def _chunks(batches, per_chunk: int):
    """Group an iterator of batches into lists of whole batches holding about ``per_chunk`` images."""
    group, rows = [], 0
    for batch in batches:
        group.append(batch)
        rows += len(batch)
        if rows >= per_chunk:
            yield group
            group, rows = [], 0
    if group:
        yield group


def _magnitudes(ranges) -> dict[str, float]:
    """tensor -> largest |value| (onnxruntime keeps each bound as a 1-element array)."""
    import numpy as np

    return {name: float(np.abs(np.asarray(data.range_value, dtype=np.float64)).max()) for name, data in ranges.items()}


def calibrate_ranges(model: Path, images: Calibration, method: str, op_types, input_name: str, batch: int, fixed: bool, work: Path, progress,
                     extremes: dict | None = None):
    """(onnxruntime TensorsData, indices of the images the ranges came from), every image used once.

    We call onnxruntime's calibrators ourselves, one ``collect_data`` per chunk of
    CALIB_CHUNK images, instead of handing quantize_static a reader: with
    ``CalibMaxIntermediateOutputs`` set, onnxruntime 1.32's MinMaxCalibrater.collect_data
    discards the collected outputs each time the limit is reached without computing their
    ranges, so ranges came from the last ``batches mod limit`` batches, or "No data is
    collected." when that is 0 (microsoft/onnxruntime#18893; fix PR #32577 is not released).
    Each collect_data ends with compute_data, which merges the chunk into the running range,
    so memory does not grow with the number of images.

    Entropy and percentile histograms take their bin width from the first chunk and widen
    later (percentile drops values beyond its float32 edge extension, entropy grows to
    100k+ bins). A MinMax pre-pass therefore finds, for every tensor, the batch holding
    its largest magnitude; those batches form the first chunk, so every later chunk falls
    inside its bins: entropy then equals one call over all images. Percentile histograms
    |x| from the first chunk's smallest |x|; smaller values in later chunks are not
    counted, which moves its threshold by less than one of its 2048 bins (tested).

    ``extremes``: a dict the caller keeps across calls on the same model and images (the INT8
    search tries entropy, then percentile): the pre-pass's finding is stored there, and the
    next histogram method reuses it instead of running the pre-pass again.
    """
    from onnxruntime.quantization import CalibrationMethod, create_calibrator

    calibrators = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile}
    histogram = method != "minmax"
    key = (str(model), batch)
    known = extremes.get(key) if histogram and extremes is not None else None
    if known is None:
        passes = 2 if histogram else 1
        progress.start(f"calibrating on {images.count} images" + (" (range pre-pass, then histograms)" if histogram else ""), passes * images.count)
        fed, found = _range_pass(model, images, op_types, input_name, batch, fixed, work, progress, histogram)
        if not fed:
            return None, []
        if not histogram:
            return found, fed  # minmax: the pass's own ranges
        first = found
        if extremes is not None:
            extremes[key] = (fed, first)
    else:
        fed, first = known
        progress.start(f"calibrating on {images.count} images (histograms; the range pre-pass of the method before)", images.count)

    chosen = set(first)
    order = first + [index for index in fed if index not in chosen]
    calibrator = create_calibrator(model, op_types, augmented_model_path=str(work / "histogram.onnx"), calibrate_method=calibrators[method])
    used: list[int] = []
    batches = images.batches(batch, order)
    first_group = [next(batches) for _ in range(-(-len(first) // batch))]  # the extremes: fixes the bin width
    calibrator.collect_data(_reader(first_group, input_name, batch, fixed, used, progress.advance))
    for group in _chunks(batches, CALIB_CHUNK):
        calibrator.collect_data(_reader(group, input_name, batch, fixed, used, progress.advance))
    assert sorted(used) == sorted(fed), "the histogram pass must see exactly the images of the range pass"
    return calibrator.compute_data(), used


def _range_pass(model: Path, images: Calibration, op_types, input_name: str, batch: int, fixed: bool, work: Path, progress, histogram: bool):
    """One MinMax pass over every image: (indices of the images fed, then the ranges for MinMax, or for a
    histogram method the sorted indices of the images that hold some tensor's largest magnitude)."""
    from onnxruntime.quantization import CalibrationMethod, create_calibrator

    minmax = create_calibrator(model, op_types, augmented_model_path=str(work / "minmax.onnx"), calibrate_method=CalibrationMethod.MinMax)
    fed: list[int] = []
    holders: dict[str, list[int]] = {}  # tensor -> indices of the batch holding its largest magnitude so far
    best: dict[str, float] = {}
    # The pre-pass for histograms needs one batch per call to tell which batch holds each extreme.
    for group in _chunks(images.batches(batch), batch if histogram else CALIB_CHUNK):
        minmax.collect_data(_reader(group, input_name, batch, fixed, fed, progress.advance))
        if histogram:
            for name, value in _magnitudes(minmax.compute_data()).items():
                if name not in best or value > best[name]:
                    best[name], holders[name] = value, [index for index, _ in group[0]]
    if not fed or not histogram:
        return fed, (minmax.compute_data() if fed else None)
    return fed, sorted({index for indices in holders.values() for index in indices})


def static_settings(target: str) -> dict:
    """quantize_static keyword arguments of the static INT8 recipe for ``target``."""
    from onnxruntime.quantization import QuantType

    if target == "tensorrt":
        return dict(
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["Conv", "Gemm", "MatMul"],
            extra_options={
                "ActivationSymmetric": True,
                "WeightSymmetric": True,
                "QuantizeBias": False,
                "DedicatedQDQPair": True,
                "OpTypesToExcludeOutputQuantization": ["Conv", "Gemm", "MatMul"],
            },
        )
    return dict(activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)


def calibration_op_types(target: str) -> list[str]:
    """The op types whose tensors quantize_static itself would calibrate for ``target``."""
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return static_settings(target).get("op_types_to_quantize") or sorted(set(QLinearOpsRegistry) | set(QDQRegistry))


def prepare_for_quantization(source: Path, work: Path):
    """(path of the pre-processed copy of ``source`` in ``work``, its ModelProto's nodes), every node named.

    The copy keeps its weights in a file beside it (``<name>.weights``); the returned
    ModelProto's initializers point there and hold no data.

    quantize_static's ``nodes_to_exclude`` matches node names, so nameless nodes get one
    here (the sensitivity search keeps layers in float by name).
    """
    import onnx

    prepared = _preprocessed(source, work)
    proto = onnx.load(str(prepared))
    used = {node.name for node in proto.graph.node if node.name}
    for index, node in enumerate(proto.graph.node):
        if not node.name:
            name = f"{node.op_type}_{index}"
            while name in used:
                name += "_"
            node.name = name
            used.add(name)
    # The weights go to a file beside the graph: quantize_static and the calibrators each run
    # shape inference through a copy of the model file on disk (onnxruntime's
    # load_model_with_shape_infer), and with external data that copy is the graph alone instead
    # of 230 MB of weights written and read back per search candidate (each 0.5 s on 2 cores).
    # Saving moves the weights out of ``proto``; the caller reads only its nodes.
    onnx.save(proto, str(prepared), save_as_external_data=True, all_tensors_to_one_file=True, location=prepared.name + ".weights")
    return prepared, proto


def calibrate(prepared: Path, images: Calibration, target: str, method: str, input_name: str, batch: int, fixed: bool, work: Path, progress,
              extremes: dict | None = None):
    """(ranges, indices of the images used) for the pre-processed model at ``prepared``; ``extremes`` as in calibrate_ranges."""
    with contextlib.redirect_stdout(io.StringIO()):  # onnxruntime prints progress notes; stdout may carry --json
        return calibrate_ranges(prepared, images, method, calibration_op_types(target), input_name, batch, fixed, work, progress, extremes)


def quantize_with_ranges(prepared: Path, ranges, target: str, method: str, work: Path, exclude=()):
    """A Q/DQ ModelProto of the pre-processed model at ``prepared`` from calibrated ``ranges``.

    ``exclude``: node names kept in float (onnxruntime's ``nodes_to_exclude``).
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_static, save_tensors_data

    calibration = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile}[method]
    # A fresh cache file in a private temporary folder, so it can only hold this run's ranges
    # (onnxruntime reuses a cache blindly).
    with tempfile.TemporaryDirectory(dir=work, prefix="q-") as tmp:
        cache = Path(tmp) / "ranges.json"
        save_tensors_data(ranges, cache)
        output = Path(tmp) / "quantized.onnx"
        with contextlib.redirect_stdout(io.StringIO()):
            quantize_static(str(prepared), str(output), None, quant_format=QuantFormat.QDQ, per_channel=True, calibrate_method=calibration,
                            calibration_cache_path=str(cache), nodes_to_exclude=list(exclude) or None, **static_settings(target))
        return keep_outputs_float(onnx.load(str(output)))


def keep_outputs_float(proto):
    """``proto`` with the Q/DQ pairs that only quantize graph outputs removed: the outputs stay float.

    onnxruntime's QDQ quantizer puts QuantizeLinear/DequantizeLinear on the last Gemm's output,
    so the logits took about 256 levels across their range: an all-zero input gave ten exact
    0.0 logits, near-top classes tied and top-5 order became arbitrary. Neither NNCF nor
    TensorRT quantizes a network's outputs. A pair is removed only when its QuantizeLinear reads
    a tensor nothing else reads and its DequantizeLinear writes a graph output nothing else reads.
    """
    graph = proto.graph
    outputs = {value.name for value in graph.output}
    readers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    producer = {name: node for node in graph.node for name in node.output}
    removed: set[int] = set()
    for dq in list(graph.node):
        if dq.op_type != "DequantizeLinear" or dq.output[0] not in outputs or readers.get(dq.output[0], 0):
            continue
        q = producer.get(dq.input[0])
        if q is None or q.op_type != "QuantizeLinear" or readers.get(q.output[0]) != 1 or readers.get(q.input[0]) != 1:
            continue
        source = producer.get(q.input[0])
        if source is None:
            continue  # a graph input read straight into an output: nothing to gain
        source.output[list(source.output).index(q.input[0])] = dq.output[0]
        removed.update((id(q), id(dq)))
    if removed:
        kept = [node for node in graph.node if id(node) not in removed]
        del graph.node[:]
        graph.node.extend(kept)
        still_read = {name for node in graph.node for name in node.input}
        initializers = [init for init in graph.initializer if init.name in still_read or init.name in outputs]
        del graph.initializer[:]
        graph.initializer.extend(initializers)
        produced = {name for node in graph.node for name in node.output}
        infos = [info for info in graph.value_info if info.name in produced and info.name not in outputs]
        del graph.value_info[:]
        graph.value_info.extend(infos)
    return proto


def quantize_static_int8(source: Path, images: Calibration, target: str, method: str, input_name: str, batch: int, fixed: bool, progress):
    """(statically quantized (Q/DQ) ModelProto of the FP32 model at ``source``, indices of the images calibrated on).

    The single recipe (no search). Returns (None, []) when no calibration image decodes.
    """
    with scratch_dir("alexnet-quantize-") as tmp:
        work = Path(tmp)
        prepared, _ = prepare_for_quantization(source, work)
        ranges, used = calibrate(prepared, images, target, method, input_name, batch, fixed, work, progress)
        if ranges is None:
            return None, []
        return quantize_with_ranges(prepared, ranges, target, method, work), used


def _without_initializer_shapes(path: Path) -> Path:
    """Rewrite the model at ``path`` without value_info entries for its initializers; returns ``path``.

    The pre-quantization shape inference records the shape of every weight. Dynamic quantization
    then turns each Gemm(transB=1) into a MatMul by transposing its weight in place, leaving that
    record stale, and onnxruntime before 1.32 re-runs strict shape inference and fails ("Inferred
    shape and existing shape differ in dimension 0: (9216) vs (4096)"): microsoft/onnxruntime#25890.
    A weight's shape is in the initializer itself, so the records carry nothing.
    """
    import onnx

    model = onnx.load(str(path))
    weights = {init.name for init in model.graph.initializer}
    kept = [info for info in model.graph.value_info if info.name not in weights]
    if len(kept) != len(model.graph.value_info):
        del model.graph.value_info[:]
        model.graph.value_info.extend(kept)
        onnx.save(model, str(path))
    return path


def quantize_dynamic_int8(source: Path):
    """A ModelProto of the FP32 model at ``source`` with dynamically quantized Gemm/MatMul weights."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with scratch_dir("alexnet-quantize-") as tmp:
        work = Path(tmp)
        prepared = _without_initializer_shapes(_preprocessed(source, work))
        output = work / "quantized.onnx"
        quantize_dynamic(str(prepared), str(output), op_types_to_quantize=["Gemm", "MatMul"], per_channel=True, weight_type=QuantType.QInt8)
        return onnx.load(str(output))
