"""Lower-precision variants of an exported FP32 ONNX model: FP16, static INT8 (Q/DQ), dynamic INT8."""
