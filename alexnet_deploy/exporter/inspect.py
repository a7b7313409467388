"""What a checkpoint or an ONNX file holds, as a plain dict (``alexnet inspect``)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from alexnet_deploy.errors import LayoutError
from alexnet_deploy.onnx_file import check_input_file, load_onnx, looks_like_checkpoint, looks_like_onnx


def inspect_path(path: Path, trust_code: bool = False, arch: str | None = None, *, trust_pickle: bool = False) -> dict[str, Any]:
    """Describe ``path``: a PyTorch checkpoint or an ONNX model (``trust_pickle``: old name of ``trust_code``)."""
    path = check_input_file(Path(path), "file")
    if looks_like_onnx(path) or (path.suffix.lower() == ".onnx" and not looks_like_checkpoint(path)):
        return inspect_onnx(path)
    return inspect_checkpoint(path, trust_code or trust_pickle, arch)


def _shape(value_info) -> list:
    dims = value_info.type.tensor_type.shape.dim
    return [d.dim_param or d.dim_value or "?" for d in dims]


def _elem_type(value_info) -> str:
    import onnx

    return onnx.helper.tensor_dtype_to_np_dtype(value_info.type.tensor_type.elem_type).name


# Inputs after the first of these ops are quantization parameters, not weights.
_QUANT_OPS = ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear")


def _split_initializers(graph) -> tuple[list, list]:
    """(weights, constants): an initializer is a constant when every use is an operand such as
    a Reshape target shape (integer, not a node's first input) or a quantization scale or zero
    point (input 1 or 2 of QuantizeLinear/DequantizeLinear); anything else is a weight."""
    import onnx

    integer = {onnx.TensorProto.INT64, onnx.TensorProto.INT32}
    uses: dict[str, list[tuple[str, int]]] = {}
    for node in graph.node:
        for index, name in enumerate(node.input):
            uses.setdefault(name, []).append((node.op_type, index))
    weights, constants = [], []
    for init in graph.initializer:
        found = uses.get(init.name, [])

        def operand(op: str, index: int) -> bool:
            return index >= 1 and (op in _QUANT_OPS or init.data_type in integer)

        (constants if found and all(operand(op, i) for op, i in found) else weights).append(init)
    return weights, constants


def inspect_onnx(path: Path) -> dict[str, Any]:
    """Record, opset, I/O, op histogram, LRN nodes and parameter count of an ONNX file."""
    import numpy as np
    import onnx

    from alexnet_deploy.record import PREFIX, read_props, read_record

    model = load_onnx(path)
    props = read_props(model)
    record = None
    if PREFIX + "schema" in props:
        record = read_record(model, str(path))
    graph = model.graph
    histogram = dict(sorted(Counter(n.op_type for n in graph.node).items()))
    lrn = [
        {"name": n.name, **{a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}}
        for n in graph.node if n.op_type == "LRN"
    ]
    weights, constants = _split_initializers(graph)
    opsets = {imp.domain or "ai.onnx": imp.version for imp in model.opset_import}
    initializer_names = {i.name for i in graph.initializer}
    return {
        "kind": "onnx",
        "path": str(path),
        "file_bytes": path.stat().st_size,
        "opset": opsets.get("ai.onnx"),
        "opsets": opsets,
        "ir_version": model.ir_version,
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "inputs": [{"name": i.name, "dtype": _elem_type(i), "shape": _shape(i)} for i in graph.input if i.name not in initializer_names],
        "outputs": [{"name": o.name, "dtype": _elem_type(o), "shape": _shape(o)} for o in graph.output],
        "nodes": len(graph.node),
        "op_histogram": histogram,
        "lrn_nodes": lrn,
        # Weights only, so that a checkpoint and its export report the same count; shape
        # operands and quantization scales/zero points are listed apart in "constants".
        "parameters": sum(int(np.prod(init.dims)) for init in weights),
        "constants": {"tensors": len(constants), "values": sum(int(np.prod(init.dims)) for init in constants)},
        "layout": record.layout if record else None,
        "precision": record.precision if record else None,
        "num_classes": record.num_classes if record else None,
        "labels": list(record.labels) if record else None,
        "preprocessing": record.preprocessing.describe() if record else None,
        "source_sha256": record.source_sha256 if record else None,
        "toolkit_version": record.toolkit_version if record else None,
        "details": dict(record.details) if record else None,
        "other_metadata": {k: v for k, v in props.items() if not k.startswith(PREFIX)},
    }


def inspect_checkpoint(path: Path, trust_code: bool = False, arch: str | None = None) -> dict[str, Any]:
    """Format, layout (or why none), classes, input size, parameters and LRN placement of a checkpoint.

    With ``arch``, a checkpoint that does not fit that layout raises LayoutError (exit 2).
    """
    from alexnet_deploy.errors import require

    torch = require("torch", "torch", "Inspecting PyTorch checkpoints")
    from alexnet_deploy.checkpoints.load import load_checkpoint
    from alexnet_deploy.checkpoints.layouts import build_model, detect_layout
    from alexnet_deploy.exporter.lrn import find_lrn_sites

    ckpt = load_checkpoint(path, trust_code=trust_code)
    report: dict[str, Any] = {
        "kind": "checkpoint",
        "path": str(path),
        "file_bytes": path.stat().st_size,
        "sha256": ckpt.sha256,
        "format": ckpt.format,
        "wrapper_key": ckpt.wrapper_key,
        "stripped_prefixes": ckpt.stripped_prefixes,
        "tensors": ckpt.num_tensors,
        "parameters": int(sum(v.numel() for v in ckpt.state_dict.values() if v.is_floating_point())),
        "dtypes": sorted({str(v.dtype).replace("torch.", "") for v in ckpt.state_dict.values()}),
        "info": ckpt.info,
        "labels": ckpt.labels,
        "layout": None,
        "layout_problem": None,
    }
    module = None
    try:
        match = detect_layout(ckpt.state_dict, arch)
    except LayoutError as exc:
        if arch:  # the user named a layout that does not fit: bad input, as in export
            raise
        from alexnet_deploy.checkpoints.resolve import layout_by_forward

        # A trusted TorchScript archive can settle an ambiguity by its own forward.
        match = layout_by_forward(ckpt) if ckpt.module is not None and not arch else None
        if match is None:
            report["layout_problem"] = exc.problem
            report["layout_fix"] = exc.fix
    if match is not None:
        layout = match.layout
        report.update(
            layout=layout.name,
            layout_summary=layout.summary,
            source=layout.source,
            num_classes=match.num_classes,
            input_size=layout.input_size,
            preprocessing=layout.preprocessing.describe(),
        )
        module = build_model(layout, ckpt.state_dict, match.num_classes)
        size = layout.input_size
    elif ckpt.module is not None and ckpt.format != "torchscript":
        module, size = ckpt.module, 224
        report["layout"] = f"custom:{type(module).__name__}"
    if module is not None:
        try:
            sites = find_lrn_sites(module, torch.zeros(1, 3, size, size))
            report["lrn"] = [site.to_dict() for site in sites]
        except Exception as exc:  # a custom module that does not take this input size
            report["lrn"] = None
            report["lrn_problem"] = str(exc).splitlines()[0][:160]
    report["first_keys"] = list(ckpt.state_dict)[:6]
    return report

