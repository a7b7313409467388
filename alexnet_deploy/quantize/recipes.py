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


def quantize_static_int8(source: Path, reader, target: str, method: str):
    """A statically quantized (Q/DQ) ModelProto of the FP32 model at ``source``.

    ``reader`` is an onnxruntime ``CalibrationDataReader`` yielding ``{input: batch}``.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    calibration = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile}[method]
    if target == "tensorrt":
        settings = dict(
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["Conv", "Gemm", "MatMul"],
            extra_options={
                "ActivationSymmetric": True,
                "WeightSymmetric": True,
                "QuantizeBias": False,
                "DedicatedQDQPair": True,
                "OpTypesToExcludeOutputQuantization": ["Conv", "Gemm", "MatMul"],
                "CalibMaxIntermediateOutputs": 16,
            },
        )
    else:
        settings = dict(activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, extra_options={"CalibMaxIntermediateOutputs": 16})
    if method != "minmax":
        settings["extra_options"].pop("CalibMaxIntermediateOutputs")  # histogram calibrators collect everything
    with tempfile.TemporaryDirectory(prefix="alexnet-quantize-") as tmp:
        work = Path(tmp)
        prepared = _preprocessed(source, work)
        output = work / "quantized.onnx"
        with contextlib.redirect_stdout(io.StringIO()):  # onnxruntime prints progress notes; stdout may carry --json
            quantize_static(str(prepared), str(output), reader, quant_format=QuantFormat.QDQ, per_channel=True, calibrate_method=calibration, **settings)
        return onnx.load(str(output))


def quantize_dynamic_int8(source: Path):
    """A ModelProto of the FP32 model at ``source`` with dynamically quantized Gemm/MatMul weights."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="alexnet-quantize-") as tmp:
        work = Path(tmp)
        prepared = _preprocessed(source, work)
        output = work / "quantized.onnx"
        quantize_dynamic(str(prepared), str(output), op_types_to_quantize=["Gemm", "MatMul"], per_channel=True, weight_type=QuantType.QInt8)
        return onnx.load(str(output))
