# The Triton Python backend step of `alexnet package --triton --image-input`: encoded images
# (a BYTES input) -> the model's float32 input, preprocessed as the ONNX file's record says.
#
# `package` writes this file as the step's 1/model.py, after the full text of
# alexnet_deploy/imaging.py (numpy and Pillow only), so Triton runs the toolkit's own
# preprocessing, bit for bit what `alexnet predict` and `alexnet serve` compute. This file has
# no `from __future__` line and no docstring of its own, since it is appended to another module.
# The preprocessing arrives as JSON in the model config's parameters (key "preprocessing").

import json

import numpy as np

try:  # inside the package (tests); in Triton the definitions above this file provide these names
    from alexnet_deploy.imaging import ImageRejected, decode_rgb, transform
except ImportError:  # pragma: no cover - only in Triton
    pass


class TritonPythonModel:
    """Triton's Python backend entry point (initialize / execute / finalize)."""

    def initialize(self, args):
        config = json.loads(args["model_config"])
        spec = json.loads(config["parameters"]["preprocessing"]["string_value"])
        self.spec = {key: spec[key] for key in ("resize", "crop", "mean", "std", "interpolation", "resize_mode")}
        self.input_name = config["input"][0]["name"]
        self.output_name = config["output"][0]["name"]
        # An FP16 model file takes float16 input: cast after preprocessing in float32, as Classifier's runtime does.
        self.dtype = np.float16 if config["output"][0]["data_type"] == "TYPE_FP16" else np.float32

    def _batch(self, encoded):
        """Encoded images (an object array of bytes, shape [N] or [N, 1]) -> float32 N x 3 x crop x crop."""
        items = [bytes(item) for item in np.asarray(encoded, dtype=object).reshape(-1)]
        crop = self.spec["crop"]
        batch = np.empty((len(items), 3, crop, crop), np.float32)
        for index, (item, row) in enumerate(zip(items, batch)):
            try:
                transform(decode_rgb(item), self.spec["resize"], crop, self.spec["mean"], self.spec["std"],
                          self.spec["interpolation"], self.spec["resize_mode"], out=row)
            except ImageRejected as exc:
                raise ValueError(f"image {index}: {exc}") from None
        return batch

    def execute(self, requests):
        import triton_python_backend_utils as pb_utils

        responses = []
        for request in requests:  # one answer per request: a bad image fails its own request only
            try:
                encoded = pb_utils.get_input_tensor_by_name(request, self.input_name).as_numpy()
                batch = self._batch(encoded).astype(self.dtype, copy=False)
                responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(self.output_name, batch)]))
            except ValueError as exc:
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(str(exc))))
        return responses

    def finalize(self):
        pass
