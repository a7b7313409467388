"""The record an ONNX file carries in ``metadata_props``: labels, preprocessing, provenance.

Export writes it once; ``Classifier``, ``predict``, ``eval``, ``verify --images`` and
calibration all read it back through :func:`read_record`, so preprocessing is written
down in one place. Keys are namespaced (``alexnet_deploy.*``) and versioned; structured
values are JSON. This module imports no torch.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

from alexnet_deploy.errors import InputError

SCHEMA_VERSION = 1
PREFIX = "alexnet_deploy."

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
RESIZE_MODES = ("shorter", "exact")
# Bounds a record must keep (checked whenever one is made or read back): a file that says
# "resize 60000" made one 64x64 image take 93 s and 14 GB.
MAX_SIDE = 4096
MAX_RESIZE_RATIO = 4


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes the model's input, in torchvision's terms.

    ``resize_mode='shorter'`` is ``Resize(resize)`` (shorter side to ``resize``, aspect
    kept); ``'exact'`` is ``Resize((resize, resize))``. Then ``CenterCrop(crop)``,
    ``ToTensor()`` (RGB, 0..1, CHW) and ``Normalize(mean, std)``.
    """

    resize: int = 256
    crop: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"
    resize_mode: str = "shorter"

    def __post_init__(self):
        if self.resize < 1 or self.crop < 1:
            raise InputError(f"resize ({self.resize}) and crop ({self.crop}) must be positive.")
        if max(self.resize, self.crop) > MAX_SIDE:
            raise InputError(f"resize ({self.resize}) and crop ({self.crop}) must be at most {MAX_SIDE} pixels.")
        if not self.crop <= self.resize * MAX_RESIZE_RATIO or not self.resize <= self.crop * MAX_RESIZE_RATIO:
            raise InputError(f"resize {self.resize} is not within {MAX_RESIZE_RATIO}x of crop {self.crop} (torchvision's recipe is Resize(256), CenterCrop(224)).")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise InputError("mean and std need three values (R,G,B), e.g. --mean 0.485,0.456,0.406.")
        if not all(math.isfinite(v) for v in (*self.mean, *self.std)):
            raise InputError(f"mean and std must be finite numbers, got mean {list(self.mean)} std {list(self.std)}.")
        if any(s <= 0 for s in self.std):
            raise InputError(f"std values must be positive, got {list(self.std)}.")
        if self.interpolation not in INTERPOLATIONS:
            raise InputError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got {self.interpolation!r}.")
        if self.resize_mode not in RESIZE_MODES:
            raise InputError(f"resize_mode must be one of {', '.join(RESIZE_MODES)}, got {self.resize_mode!r}.")
        if self.resize_mode == "exact" and self.crop > self.resize:
            raise InputError(f"crop {self.crop} is larger than the resized image {self.resize}x{self.resize}.")

    @classmethod
    def for_input_size(cls, size: int, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> "Preprocessing":
        """ImageNet-style defaults for an input of ``size``: resize by 256/224, center crop."""
        return cls(resize=int(round(size * 256 / 224)) if size != 227 else 256, crop=size, mean=tuple(mean), std=tuple(std))

    def describe(self) -> str:
        """One line, torchvision-style."""
        resize = f"Resize({self.resize})" if self.resize_mode == "shorter" else f"Resize(({self.resize}, {self.resize}))"
        mean = ", ".join(f"{v:g}" for v in self.mean)
        std = ", ".join(f"{v:g}" for v in self.std)
        return f"{resize} {self.interpolation}, CenterCrop({self.crop}), Normalize(mean=[{mean}], std=[{std}])"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Preprocessing":
        return cls(
            resize=int(data["resize"]),
            crop=int(data["crop"]),
            mean=tuple(float(v) for v in data["mean"]),
            std=tuple(float(v) for v in data["std"]),
            interpolation=str(data.get("interpolation", "bilinear")),
            resize_mode=str(data.get("resize_mode", "shorter")),
        )


@dataclass(frozen=True)
class ModelRecord:
    """Everything an app needs to use an exported model correctly."""

    labels: tuple[str, ...]
    preprocessing: Preprocessing
    layout: str
    source_sha256: str = ""
    toolkit_version: str = ""
    precision: str = "fp32"
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def to_props(self) -> dict[str, str]:
        """The ``metadata_props`` entries (key -> string value) for this record."""
        return {
            PREFIX + "schema": str(SCHEMA_VERSION),
            PREFIX + "labels": json.dumps(list(self.labels), ensure_ascii=False),
            PREFIX + "preprocessing": json.dumps(asdict(self.preprocessing)),
            PREFIX + "layout": self.layout,
            PREFIX + "source_sha256": self.source_sha256,
            PREFIX + "version": self.toolkit_version,
            PREFIX + "precision": self.precision,
            PREFIX + "details": json.dumps(dict(self.details), sort_keys=True),
        }

    @classmethod
    def from_props(cls, props: Mapping[str, str], where: str = "model") -> "ModelRecord":
        """Parse a record from ``metadata_props``; raise InputError naming what is missing."""
        if PREFIX + "schema" not in props:
            raise InputError(
                f"{where} has no alexnet-deploy metadata (labels, preprocessing).",
                "export it with `alexnet export`, which writes them into the ONNX file",
            )
        schema = props[PREFIX + "schema"]
        if schema.isdigit() and int(schema) > SCHEMA_VERSION:
            raise InputError(
                f"{where} was written by a newer alexnet-deploy (metadata schema {schema}).",
                "upgrade: pip install -U alexnet-deploy",
            )
        try:
            details = json.loads(props.get(PREFIX + "details", "{}"))
            labels = json.loads(props[PREFIX + "labels"])
            if not isinstance(details, dict) or not isinstance(labels, list):
                raise ValueError("labels must be a list and details an object")
            if not labels or not all(isinstance(label, str) for label in labels):
                raise ValueError("labels must be a non-empty list of strings")
            check_labels(labels, f"{where}'s labels", "re-export it with `alexnet export --labels FILE`")
            return cls(
                labels=tuple(labels),
                preprocessing=Preprocessing.from_dict(json.loads(props[PREFIX + "preprocessing"])),
                layout=props.get(PREFIX + "layout", ""),
                source_sha256=props.get(PREFIX + "source_sha256", ""),
                toolkit_version=props.get(PREFIX + "version", ""),
                precision=props.get(PREFIX + "precision", "fp32"),
                details=details,
            )
        except InputError as exc:
            raise InputError(f"{where} has damaged alexnet-deploy metadata ({exc.problem})", "re-export the model") from None
        except (KeyError, ValueError, TypeError, AttributeError, OverflowError) as exc:  # OverflowError: int(1e999)
            raise InputError(f"{where} has damaged alexnet-deploy metadata ({exc}).", "re-export the model") from None


def write_record(model_proto, record: ModelRecord) -> None:
    """Replace the alexnet-deploy entries of an ``onnx.ModelProto``'s metadata_props with ``record``."""
    keep = [(p.key, p.value) for p in model_proto.metadata_props if not p.key.startswith(PREFIX)]
    del model_proto.metadata_props[:]
    for key, value in keep + sorted(record.to_props().items()):
        entry = model_proto.metadata_props.add()
        entry.key, entry.value = key, value


def read_props(model_proto) -> dict[str, str]:
    """All metadata_props of an ``onnx.ModelProto`` as a dict."""
    return {p.key: p.value for p in model_proto.metadata_props}


def read_record(model_proto, where: str = "model") -> ModelRecord:
    """The record stored in an ``onnx.ModelProto``, checked against the graph it describes.

    InputError (one line, before any image is decoded) when the record is damaged or does
    not fit the graph: a crop other than the input size the graph fixes, or a label count
    other than the output width it fixes.
    """
    record = ModelRecord.from_props(read_props(model_proto), where)
    check_record_fits_graph(record, model_proto.graph, where)
    return record


def _graph_dims(value_info) -> list[int | None]:
    """A graph input's or output's dimensions (None where not fixed)."""
    shape = value_info.type.tensor_type.shape
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in shape.dim]


def check_record_fits_graph(record: ModelRecord, graph, where: str = "model") -> None:
    """InputError when ``record`` contradicts what ``graph`` fixes: its input size (the crop) or its class count."""
    initializers = {init.name for init in graph.initializer}
    inputs = [value for value in graph.input if value.name not in initializers]
    if inputs:
        dims = _graph_dims(inputs[0])
        crop = record.preprocessing.crop
        if len(dims) == 4 and any(side is not None and side != crop for side in dims[2:]):
            shown = "x".join("?" if side is None else str(side) for side in dims[2:])
            raise InputError(f"{where}'s preprocessing crops to {crop}x{crop} but its graph takes {shown} input (damaged metadata).",
                             "re-export the model (alexnet export) so that its record matches the graph")
    if graph.output:
        dims = _graph_dims(graph.output[0])
        if len(dims) == 2 and dims[1] is not None and dims[1] != record.num_classes:
            raise InputError(f"{where} has {record.num_classes} labels but its graph outputs {dims[1]} classes (damaged metadata).",
                             "re-export it with `alexnet export --labels FILE` holding one label per class")


def read_record_or_none(model_proto, where: str = "model") -> ModelRecord | None:
    """The record in an ``onnx.ModelProto``, or None when it carries no alexnet-deploy metadata."""
    if PREFIX + "schema" not in read_props(model_proto):
        return None
    return read_record(model_proto, where)


def read_record_from_path(path: Path) -> ModelRecord:
    """The record stored in the ONNX file at ``path`` (weights are not loaded)."""
    from alexnet_deploy.onnx_file import load_onnx

    return read_record(load_onnx(path, load_weights=False), where=str(path))


@dataclass
class PreprocessingOverrides:
    """Overrides of the layout's preprocessing; None keeps the default."""

    resize: int | None = None
    crop: int | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None


def apply_overrides(base: Preprocessing, options: PreprocessingOverrides) -> Preprocessing:
    """``base`` with the user's overrides applied (resize scales with crop when only crop changes)."""
    crop = options.crop or base.crop
    resize = options.resize or (base.resize if crop == base.crop else max(crop, round(base.resize * crop / base.crop)))
    return Preprocessing(resize, crop, options.mean or base.mean, options.std or base.std, base.interpolation, base.resize_mode)


# Operators that only a lower-precision graph has (how a file with stripped metadata is judged).
QUANTIZED_OPS = frozenset({
    "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearConv", "QLinearMatMul",
    "ConvInteger", "MatMulInteger", "QGemm", "QLinearAdd", "QLinearMul", "MatMulIntegerToFloat",
})


def graph_precision(proto) -> str | None:
    """'fp16', 'int8' or 'int8-dynamic' when the graph is already lower precision, else None."""
    import onnx

    ops = {node.op_type for node in proto.graph.node}
    if ops & {"DynamicQuantizeLinear", "MatMulInteger", "ConvInteger"}:
        return "int8-dynamic"
    if ops & QUANTIZED_OPS:
        return "int8"
    if any(init.data_type == onnx.TensorProto.FLOAT16 for init in proto.graph.initializer):
        return "fp16"
    return None


def check_labels(labels: list[str], source: str, fix: str) -> list[str]:
    """``labels`` unchanged, or InputError if one is empty or spans lines.

    Triton's labels.txt (and this toolkit's own reader) take one label per line, so a
    line break inside a label would shift every later class onto the wrong index, and
    an empty one would vanish from the file.
    """
    for index, label in enumerate(labels):
        shown = repr(label) if len(label) <= 60 else repr(label[:57]) + "..."
        if not label.strip():
            raise InputError(f"{source}: label {index} is empty.", f"{fix}; every class needs a visible name")
        if label.splitlines() != [label]:  # \n, \r and the other breaks str.splitlines knows
            raise InputError(f"{source}: label {index} {shown} contains a line break.", f"{fix}; a label must fit on one line")
    return labels


def default_labels(num_classes: int) -> list[str]:
    """Placeholder labels ``class_0 ... class_{N-1}`` when none were given."""
    return [f"class_{i}" for i in range(num_classes)]
