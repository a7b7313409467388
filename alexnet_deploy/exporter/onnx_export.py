"""A resolved PyTorch model to a checked ONNX file: LRN native, metadata inside, batch dynamic."""

from __future__ import annotations

import contextlib
import io
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from alexnet_deploy import __version__
from alexnet_deploy.errors import ExportError, InputError
from alexnet_deploy.exporter.lrn import LRNSite, find_lrn_sites, lrn_as_onnx_op, lrn_onnx_translation
from alexnet_deploy.record import ModelRecord, Preprocessing, write_record
from alexnet_deploy.checkpoints.resolve import ResolvedModel

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
MIN_OPSET, MAX_OPSET = 18, 23
# Node metadata the exporter adds that leaks local paths or is only useful to torch.
_DROPPED_NODE_METADATA = ("pkg.torch.onnx.stack_trace", "pkg.torch.onnx.fx_node", "stack_trace", "fx_node")


@dataclass
class ExportResult:
    """An exported model in memory, with what happened on the way."""

    model_proto: Any
    record: ModelRecord
    lrn_sites: list[LRNSite]
    lrn_nodes: int
    op_histogram: dict[str, int]
    opset: int
    batch: str
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "layout": self.record.layout,
            "num_classes": self.record.num_classes,
            "opset": self.opset,
            "batch": self.batch,
            "lrn_nodes": self.lrn_nodes,
            "lrn_sites": [s.to_dict() for s in self.lrn_sites],
            "nodes": sum(self.op_histogram.values()),
            "op_histogram": self.op_histogram,
            "warnings": self.warnings,
        }


def parse_batch(text: str | int | None) -> int | None:
    """``'dynamic'`` (or None) -> None; ``'N'`` -> N; InputError otherwise."""
    if text is None or str(text).strip().lower() == "dynamic":
        return None
    try:
        value = int(str(text))
    except ValueError:
        value = 0
    if value < 1:
        raise InputError(f"--batch {text!r} is neither 'dynamic' nor a positive integer.", "use --batch dynamic (default) or e.g. --batch 8")
    return value


def check_opset(opset: int) -> None:
    """InputError unless ``opset`` is one the exporter supports."""
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise InputError(f"--opset {opset} is not supported.", f"use an opset from {MIN_OPSET} to {MAX_OPSET} (default 18)")


def _clean_node_metadata(graph) -> None:
    for node in graph.node:
        keep = [(p.key, p.value) for p in node.metadata_props if p.key not in _DROPPED_NODE_METADATA]
        del node.metadata_props[:]
        for key, value in keep:
            entry = node.metadata_props.add()
            entry.key, entry.value = key, value
        for attr in node.attribute:
            if attr.g is not None and attr.g.node:
                _clean_node_metadata(attr.g)


def _torch_export(module, example: torch.Tensor, dynamic: bool, opset: int):
    # Positional form: fits any forward signature.
    dynamic_shapes = ({0: torch.export.Dim("batch", min=1, max=1 << 16)},) if dynamic else None

    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module, (example,), f=None, dynamo=True, opset_version=opset,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamic_shapes=dynamic_shapes,
            custom_translation_table={torch.ops.alexnet_deploy.lrn.default: lrn_onnx_translation},
            optimize=True, verbose=False, report=False,
        )
    return program.model_proto


def export_model(
    resolved: ResolvedModel,
    labels: list[str],
    preprocessing: Preprocessing | None = None,
    batch: int | None = None,
    opset: int = 18,
    progress: Callable[[str], None] | None = None,
) -> ExportResult:
    """Export ``resolved`` to a checked in-memory ONNX model with the toolkit's record inside.

    Every LRN forward executes becomes one ONNX ``LRN`` node where an exact mapping
    exists (an exact decomposition and a warning otherwise). Input ``input`` (float32
    NCHW), output ``logits``; the batch dimension is dynamic unless ``batch`` is given.
    """
    import onnx

    step = progress or (lambda message: None)
    check_opset(opset)
    if len(labels) != resolved.num_classes:
        raise InputError(
            f"{len(labels)} labels were given but the model has {resolved.num_classes} classes.",
            "give the labels file the model was trained with (one label per class, in index order)",
        )
    preprocessing = preprocessing or resolved.preprocessing
    if preprocessing.crop != resolved.input_size:
        raise InputError(
            f"preprocessing crops to {preprocessing.crop} but the model takes {resolved.input_size}x{resolved.input_size}.",
            f"use --crop {resolved.input_size}, or --input-size {preprocessing.crop} if the model was trained at that size",
        )
    module = resolved.module
    step("finding LRN layers")
    sites = find_lrn_sites(module, resolved.example(2))
    notes = list(resolved.notes)
    for site in sites:
        if not site.exact:
            notes.append(f"LRN {site.name}: {site.note}")

    step("tracing with torch.onnx (dynamo)")
    example = resolved.example(batch or 2)
    try:
        with lrn_as_onnx_op(module, sites):
            proto = _torch_export(module, example, batch is None, opset)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = "export with a fixed batch (--batch N)" if batch is None and ("batch" in str(exc) or "Constraint" in str(exc) or "guard" in str(exc).lower()) else "run with --debug for the full error"
        raise ExportError(f"torch.onnx.export failed: {first[:200]}", hint) from exc

    _clean_node_metadata(proto.graph)
    proto.producer_name = "alexnet-deploy"
    proto.producer_version = __version__
    proto.doc_string = f"AlexNet-family classifier exported by alexnet-deploy {__version__}"
    histogram = dict(sorted(Counter(node.op_type for node in proto.graph.node).items()))
    lrn_nodes = histogram.get("LRN", 0)
    expected_lrn = sum(site.calls for site in sites if site.exact)
    if lrn_nodes != expected_lrn:
        raise ExportError(f"expected {expected_lrn} LRN nodes in the exported graph, found {lrn_nodes}.", "report this as a bug, with --debug output")

    record = ModelRecord(
        labels=tuple(labels),
        preprocessing=preprocessing,
        layout=resolved.name,
        source_sha256=resolved.checkpoint.sha256,
        toolkit_version=__version__,
        precision="fp32",
        details={
            "input_size": resolved.input_size,
            "checkpoint_format": resolved.checkpoint.format,
            "checkpoint_file": resolved.checkpoint.path.name,
            "opset": opset,
            "batch": "dynamic" if batch is None else batch,
            "lrn": [{"name": s.name, "kind": s.kind, "onnx_lrn": s.onnx} for s in sites],
            "torch_version": torch.__version__.split("+")[0],
        },
    )
    write_record(proto, record)

    step("checking the graph (onnx.checker, shape inference)")
    try:
        onnx.checker.check_model(proto, full_check=True)
        proto = onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
    except Exception as exc:
        raise ExportError(f"the exported graph fails onnx.checker: {str(exc).splitlines()[0][:200]}", "run with --debug and report it") from exc
    return ExportResult(proto, record, sites, lrn_nodes, histogram, opset, "dynamic" if batch is None else str(batch), notes)


def default_output_path(checkpoint: Path) -> Path:
    """``weights/alexnet.pth`` -> ``weights/alexnet.onnx``."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_suffix(".onnx")


__all__ = ["ExportResult", "export_model", "parse_batch", "check_opset", "default_output_path"]
