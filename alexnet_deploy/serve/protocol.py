"""The KServe v2 / Triton HTTP inference protocol for a one-output classifier: no I/O here.

A request carries one of two inputs: the model's own FP32 tensor (already preprocessed), or
``image``, a BYTES tensor of encoded images (JPEG, PNG, ...) that the server preprocesses with
the record in the model file. BYTES travel as base64 strings in JSON, or in the binary tensor
extension as Triton serializes them (each element: a 4-byte little-endian length, then the bytes).

Decoding validates everything a client controls before spending memory on it: JSON size and
integer literals while parsing, then the declared shape and datatype against the model and the
limits, and only then the tensor data. Datatypes follow Triton exactly (the model's declared
input datatype only, no casting), so a client written against this server also works on Triton.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import struct
from dataclasses import dataclass

import numpy as np

from alexnet_deploy.imaging import IMAGE_FORMATS as _IMAGE_FORMATS

_ITEMSIZE = {"FP32": 4}  # the model's declared input datatype; Triton accepts nothing else
IMAGE_INPUT = "image"  # the BYTES input of encoded images
IMAGE_FORMATS = list(_IMAGE_FORMATS)  # the formats decoded (imaging.IMAGE_FORMATS), named in the metadata
_MAX_INT_DIGITS = 20  # any integer the protocol needs (shapes, sizes, counts) fits; a 400-digit literal would overflow numpy


class RequestError(Exception):
    """A request the client must fix (answered with ``status`` and extra ``headers``)."""

    def __init__(self, message: str, status: int = 400, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > _MAX_INT_DIGITS:
        raise RequestError(f"integer literal of {len(text)} characters in the JSON body; numbers must fit a 64-bit integer or a float")
    return int(text)


_MAX_JSON_OBJECTS = 64  # a request for this one-input, one-output model needs fewer than 10
_MAX_JSON_STRINGS = 1024  # names, datatypes, keys: a few dozen; "ab" is 5 bytes of JSON but ~60 of Python
_MAX_JSON_DEPTH = 32  # {"inputs": [{"data": [[[[...]]]]}]} is 7 deep
_BYTES_PER_ARRAY = 32  # even nested "data" has a row of W >= 16 numbers (>= 32 bytes) per array
# A string runs to its closing quote, or to the end of the body when it has none: every match
# then succeeds, so no start is scanned twice. (Requiring the closing quote made a body of
# '"\"\"\"...' quadratic: 40 KB took 3 s of the GIL, 16 MB about a day.)
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?\Z)', re.DOTALL)
_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def _check_shape(data: bytes) -> None:
    """Refuse, before parsing, JSON whose arrays, strings or nesting would outgrow the memory
    estimate (``[],`` is 3 bytes of text and ~64 of Python list: a 16 MB body of them was +509 MB)."""
    bare, strings = _STRING.subn(b"", data)
    brackets = bare.translate(None, _BRACKETS)
    if brackets.count(b"{") > _MAX_JSON_OBJECTS:
        raise RequestError(f"the request has more than {_MAX_JSON_OBJECTS} JSON objects; one input, at most one entry per output")
    if strings > _MAX_JSON_STRINGS:
        raise RequestError(f"the request has more than {_MAX_JSON_STRINGS} JSON strings; tensor data must be numbers, and more images "
                           "than that go in several requests or as binary BYTES (the binary tensor extension)")
    arrays = brackets.count(b"[")
    if arrays > 64 + len(data) // _BYTES_PER_ARRAY:
        raise RequestError(f"the request has {arrays} JSON arrays for {len(data)} bytes; send \"data\" as one flat list of numbers")
    if brackets:
        steps = np.frombuffer(brackets, dtype=np.uint8)
        depth = int(np.cumsum(np.where((steps == ord("[")) | (steps == ord("{")), 1, -1), dtype=np.int64).max())
        if depth > _MAX_JSON_DEPTH:
            raise RequestError(f"the request's JSON nests {depth} deep; at most {_MAX_JSON_DEPTH}")


def loads(data: bytes):
    """json.loads that refuses, while parsing, over-long integer literals (a 400, not a 500 later)
    and more than _MAX_JSON_OBJECTS objects (200,000 "outputs" entries decoded to ~50 MB of dicts
    before they could be counted), and before parsing, too many arrays or strings or too deep a
    nesting (:func:`_check_shape`)."""
    _check_shape(data)
    objects = [0]

    def count(pairs):
        objects[0] += 1
        if objects[0] > _MAX_JSON_OBJECTS:
            raise RequestError(f"the request has more than {_MAX_JSON_OBJECTS} JSON objects; one input, at most one entry per output")
        return dict(pairs)

    try:
        # UTF-8 only (RFC 8259 8.1; Triton too): json.loads would also take UTF-16/32 bytes, which
        # _check_shape cannot read ('\\"' encoded in UTF-16 misaligns its strings and hides brackets).
        return json.loads(data.decode("utf-8-sig", "surrogatepass"), parse_int=_parse_int, object_pairs_hook=count)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise RequestError(f"the request body is not valid JSON ({str(exc)[:120]})") from None


def _non_numbers(data: list) -> str | None:
    """The name of a JSON type in ``data`` (flat or nested lists) that is not a number, else None."""
    types = set(map(type, data))
    if list in types:
        types.discard(list)
        for item in data:
            if type(item) is list:
                wrong = _non_numbers(item)
                if wrong:
                    return wrong
    wrong = types - {int, float}  # bool is an int subclass: type(), not isinstance()
    if wrong:
        return {str: "a string", bool: "a boolean", type(None): "null", dict: "an object"}.get(next(iter(wrong)), "a non-number")
    return None


class EncodedImages(list):
    """The images of an ``image`` input: one bytes-like object per image, still encoded."""


@dataclass
class Codec:
    """Request decoding and response encoding for one model (names, input CHW, labels, preprocessing)."""

    name: str
    input_name: str
    chw: tuple[int, ...]
    output_name: str
    labels: list[str]
    max_tensor_bytes: int
    input_datatype: str = "FP32"
    preprocessing: dict | None = None  # published in the metadata: how ``image`` inputs become the tensor
    image_input: str = IMAGE_INPUT  # the BYTES input's name (another when the model's own input is called that)

    def __post_init__(self):
        if self.image_input == self.input_name:
            self.image_input = f"{IMAGE_INPUT}_bytes"

    def metadata(self) -> dict:
        inputs = [{"name": self.input_name, "datatype": self.input_datatype, "shape": [-1, *self.chw]}]
        data = {"name": self.name, "versions": ["1"], "platform": "onnxruntime_onnx", "inputs": inputs,
                "outputs": [{"name": self.output_name, "datatype": "FP32", "shape": [-1, len(self.labels)]}]}
        if self.preprocessing is not None:
            inputs.append({"name": self.image_input, "datatype": "BYTES", "shape": [-1]})
            # Either input alone makes a request; the second is preprocessed here exactly as below.
            data["parameters"] = {"preprocessing": self.preprocessing, "image_input": self.image_input, "image_formats": IMAGE_FORMATS,
                                  "tensor_input": self.input_name}
        return data

    def decode(self, body: bytes, header_length: int | None) -> tuple[dict, np.ndarray | EncodedImages]:
        """(the request's JSON, its input batch or its encoded images) or RequestError; the outputs asked for are validated too."""
        view = memoryview(body)  # slices of a view do not copy a 64 MB body
        if header_length is not None:
            if not 0 < header_length <= len(body):
                raise RequestError(f"Inference-Header-Content-Length {header_length} does not fit a body of {len(body)} bytes")
            header, binary = view[:header_length], view[header_length:]
        else:
            header, binary = view, view[:0]
        request = loads(bytes(header))
        if not isinstance(request, dict) or not isinstance(request.get("inputs"), list) or len(request["inputs"]) != 1:
            raise RequestError(f"the request needs \"inputs\": a list with one tensor named {self.input_name!r}")
        if not isinstance(request.get("id", ""), str):  # echoed in the response: NaN there was a 500
            raise RequestError("\"id\" must be a string")
        if request.get("outputs") is not None and not isinstance(request["outputs"], list):
            raise RequestError("\"outputs\" must be a list")
        for where in [request] + request["inputs"] + (request.get("outputs") or []):
            if isinstance(where, dict) and not isinstance(where.get("parameters", {}), dict):
                raise RequestError("\"parameters\" must be an object")
        self._check_outputs(request.get("outputs") or [])
        spec = request["inputs"][0]
        if self.preprocessing is not None and isinstance(spec, dict) and spec.get("name") == self.image_input:
            return request, self._decode_images(spec, binary)
        return request, self._decode_input(spec, binary)

    def _decode_images(self, spec: dict, binary: memoryview) -> EncodedImages:
        """The encoded images of an ``image`` input (BYTES, shape [N] or [N, 1]): base64 strings in JSON, or Triton's binary BYTES."""
        if spec.get("datatype") != "BYTES":
            raise RequestError(f"input {self.image_input!r} takes datatype BYTES (encoded JPEG/PNG files), not {str(spec.get('datatype'))[:20]!r}")
        shape = spec.get("shape")
        if not isinstance(shape, list) or not all(type(v) is int and v >= 0 for v in shape) or len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1):
            raise RequestError(f"input {self.image_input!r} has shape {str(shape)[:80]}; send [N] (or [N, 1]): one encoded image per element")
        count = shape[0]
        if count < 1:
            raise RequestError("the batch is empty")
        tensor = count * math.prod(self.chw) * _ITEMSIZE["FP32"]
        if tensor > self.max_tensor_bytes:
            raise RequestError(f"{count} images make a {tensor}-byte input tensor, over this server's {self.max_tensor_bytes} (--max-body-mb); send fewer per request", 413)
        size = (spec.get("parameters") or {}).get("binary_data_size")
        images = EncodedImages()
        if size is not None:
            if type(size) is not int or size != len(binary):
                raise RequestError(f"binary_data_size {str(size)[:40]} does not match the {len(binary)} bytes sent")
            position = 0
            for index in range(count):  # Triton's BYTES serialization: <uint32 little-endian length><bytes>, per element
                if position + 4 > len(binary):
                    raise RequestError(f"the binary data holds {index} of the {count} images the shape declares")
                length = struct.unpack_from("<I", binary, position)[0]
                position += 4
                if position + length > len(binary):
                    raise RequestError(f"image {index} declares {length} bytes; only {len(binary) - position} follow")
                images.append(binary[position:position + length])
                position += length
            if position != len(binary):
                raise RequestError(f"{len(binary) - position} bytes follow the {count} images the shape declares")
        else:
            data = spec.get("data")
            if isinstance(data, list) and len(shape) == 2 and all(type(item) is list and len(item) == 1 for item in data):
                data = [item[0] for item in data]  # [N, 1] as nested lists
            if not isinstance(data, list) or len(data) != count or not all(type(item) is str for item in data):
                raise RequestError(f"input {self.image_input!r} needs \"data\": a list of {count} base64 strings (or binary_data_size)")
            for index, text in enumerate(data):
                try:
                    images.append(base64.b64decode(text, validate=True))
                except (binascii.Error, ValueError):
                    raise RequestError(f"image {index} is not base64 (JSON carries encoded images as base64 strings)") from None
        for index, image in enumerate(images):
            if len(image) == 0:
                raise RequestError(f"image {index} is empty")
        return images

    def _check_outputs(self, wanted: list) -> None:
        # Checked before inference: each entry is answered with a copy of the output, so 200,000
        # entries made a 122 MB response from a 6 MB request.
        names = [item.get("name") if isinstance(item, dict) else item for item in wanted]
        for name in names:
            if name != self.output_name:
                raise RequestError(f"unknown output {str(name)[:80]!r}; this model's output is {self.output_name!r}")
        if len(names) > 1:
            raise RequestError(f"output {self.output_name!r} is requested {len(names)} times; each output at most once")

    def _decode_input(self, spec, binary: memoryview) -> np.ndarray:
        if not isinstance(spec, dict):
            raise RequestError("each input must be an object with name, shape, datatype and data")
        if spec.get("name") != self.input_name:
            also = f" (or {self.image_input!r}: encoded images)" if self.preprocessing is not None else ""
            raise RequestError(f"unknown input {str(spec.get('name'))[:80]!r}; this model's input is {self.input_name!r}{also}")
        datatype = spec.get("datatype")
        if datatype != self.input_datatype:
            raise RequestError(f"input datatype {str(datatype)[:20]!r} does not match the model's input datatype {self.input_datatype}; send {self.input_datatype}")
        shape = spec.get("shape")
        if not isinstance(shape, list) or not all(type(v) is int and v >= 0 for v in shape) or len(shape) != 4 or tuple(shape[1:]) != self.chw:
            raise RequestError(f"input shape {str(shape)[:80]} does not match [N, {', '.join(map(str, self.chw))}]")
        if shape[0] < 1:
            raise RequestError("the batch is empty")
        count = math.prod(shape)
        itemsize = _ITEMSIZE[datatype]
        # The declared shape bounds everything decoded below, so check it against the limit first.
        if count * itemsize > self.max_tensor_bytes:
            raise RequestError(f"input shape {shape} is {count * itemsize} bytes, over this server's {self.max_tensor_bytes} (--max-body-mb); send smaller batches", 413)
        size = (spec.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            if type(size) is not int or size != len(binary) or size != count * itemsize:
                raise RequestError(f"binary_data_size {str(size)[:40]} does not match shape {shape} of {datatype} (and the {len(binary)} bytes sent)")
            array = np.frombuffer(binary, dtype="<f4").reshape(shape)
        else:
            data = spec.get("data")
            if not isinstance(data, list):
                raise RequestError("the input has no \"data\" list (or binary_data_size)")
            if len(data) != count and not (data and isinstance(data[0], list)):
                raise RequestError(f"input has {len(data)} values; shape {shape} needs {count}")
            wrong = _non_numbers(data)
            if wrong:
                # numpy would read "1.5" and true as numbers; Triton refuses them
                raise RequestError(f"input data must be JSON numbers for datatype {datatype}; got {wrong}")
            try:
                array = np.asarray(data, dtype=np.float32).reshape(-1)
            except (ValueError, TypeError, OverflowError) as exc:
                raise RequestError(f"input data is not a list of numbers ({str(exc)[:120]})") from None
            if array.size != count:
                raise RequestError(f"input has {array.size} values; shape {shape} needs {count}")
            array = array.reshape(shape)
        if not np.isfinite(array).all():
            raise RequestError("input contains NaN or infinity")
        return array

    def _classes(self, logits: np.ndarray, count) -> list[list[str]]:
        """Triton's classification extension: the top ``count`` as "score:index:label" (scores are logits)."""
        if type(count) is not int or count < 1:
            raise RequestError(f"classification (class_count) must be a positive integer, got {str(count)[:40]!r}")
        k = min(count, logits.shape[1])
        order = np.argsort(-logits, axis=1, kind="stable")[:, :k]
        return [[f"{row[i]:f}:{i}:{self.labels[i]}" for i in top] for row, top in zip(logits, order)]

    def encode(self, request: dict, logits: np.ndarray) -> tuple[bytes, dict[str, str]]:
        """The response body and its headers (JSON, or JSON header + binary blobs)."""
        if not np.isfinite(logits).all():
            raise RequestError("the model produced non-finite outputs for this input (values out of range?)", 422)
        wanted = request.get("outputs") or [{"name": self.output_name}]
        binary_default = (request.get("parameters") or {}).get("binary_data_output", False) is True
        outputs, blobs = [], []
        for item in wanted:
            parameters = (item.get("parameters") if isinstance(item, dict) else None) or {}
            binary = parameters.get("binary_data", binary_default) is True
            if "classification" in parameters:  # what clients send for class_count=k
                classes = self._classes(logits, parameters["classification"])
                entry = {"name": self.output_name, "datatype": "BYTES", "shape": [len(classes), len(classes[0])]}
                if binary:
                    blob = b"".join(struct.pack("<I", len(v.encode())) + v.encode() for row in classes for v in row)
                else:
                    entry["data"] = [v for row in classes for v in row]
            else:
                entry = {"name": self.output_name, "datatype": "FP32", "shape": list(logits.shape)}
                if binary:
                    blob = np.ascontiguousarray(logits, dtype="<f4").tobytes()
                else:
                    entry["data"] = logits.astype(float).reshape(-1).tolist()
            if binary:
                entry["parameters"] = {"binary_data_size": len(blob)}
                blobs.append(blob)
            outputs.append(entry)
        response = {"model_name": self.name, "model_version": "1", "outputs": outputs}
        if "id" in request:
            response["id"] = request["id"]
        text = json.dumps(response, allow_nan=False).encode()
        if blobs:
            return text + b"".join(blobs), {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(text))}
        return text, {"Content-Type": "application/json"}
