"""The export and verify jobs end to end, as the CLI runs them and as Python callers can.

Order matters for safety: every input is checked before slow work starts, and the ONNX
file is written only after it passed onnx.checker and (unless disabled) parity.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from alexnet_deploy.errors import CheckFailed, InputError, require
from alexnet_deploy.labels import check_labels, default_labels, read_labels
from alexnet_deploy.record import PreprocessingOverrides, apply_overrides
from alexnet_deploy.checkpoints.options import ModelOptions
from alexnet_deploy.fileio import atomic_write_bytes, check_writable
from alexnet_deploy.onnx_file import check_input_file, load_onnx, looks_like_checkpoint, looks_like_onnx
from alexnet_deploy.preprocess import list_images

Progress = Callable[[str], None]


@dataclass
class ExportOutcome:
    """What ``export_checkpoint`` produced."""

    path: Path
    result: object  # ExportResult
    resolved: object  # ResolvedModel
    verification: object | None  # VerifyReport

    def to_dict(self) -> dict:
        data = {"output": str(self.path), "bytes": self.path.stat().st_size, **self.result.summary()}
        data["checkpoint"] = {"path": str(self.resolved.checkpoint.path), "format": self.resolved.checkpoint.format, "sha256": self.resolved.checkpoint.sha256}
        data["input_size"] = self.resolved.input_size
        data["labels"] = list(self.result.record.labels)
        data["preprocessing"] = self.result.record.preprocessing.describe()
        data["verification"] = self.verification.to_dict() if self.verification else None
        return data


def choose_labels(labels: list[str] | None, source: Path | None, checkpoint_labels: list[str] | None, num_classes: int) -> list[str]:
    """The given ``labels`` (read from ``source``), else the checkpoint's, else placeholders; count must match."""
    if labels is not None:
        if len(labels) != num_classes:
            raise InputError(
                f"{source} has {len(labels)} labels but the model has {num_classes} classes.",
                "give the labels the model was trained with (one per class, in index order)",
            )
        return labels
    if checkpoint_labels and len(checkpoint_labels) == num_classes:
        return check_labels(list(checkpoint_labels), "the checkpoint's labels", "pass --labels FILE to use other labels")
    return default_labels(num_classes)


def export_checkpoint(
    checkpoint: Path,
    output: Path | None = None,
    model: ModelOptions | None = None,
    labels: Path | None = None,
    preprocessing: PreprocessingOverrides | None = None,
    batch: int | None = None,
    opset: int = 18,
    verify: bool = True,
    images: Path | None = None,
    progress: Progress | None = None,
) -> ExportOutcome:
    """Export ``checkpoint`` to ``output`` (default: next to it, ``.onnx``), verified against PyTorch.

    Raises CheckFailed (nothing written) when parity fails; InputError and its kinds for
    unusable inputs, before any slow work where possible.
    """
    require("torch", "torch", "Exporting checkpoints")
    from alexnet_deploy.exporter.onnx_export import check_opset, default_output_path, export_model
    from alexnet_deploy.checkpoints.resolve import resolve_model
    from alexnet_deploy.verify.parity import verify_parity

    step = progress or (lambda message: None)
    model = model or ModelOptions()
    preprocessing = preprocessing or PreprocessingOverrides()
    checkpoint = check_input_file(Path(checkpoint), "checkpoint")
    if looks_like_onnx(checkpoint) and not looks_like_checkpoint(checkpoint):
        raise InputError(f"{checkpoint} is already an ONNX model; export takes a PyTorch checkpoint.", f"check it with: alexnet verify {checkpoint} --checkpoint CKPT.pth")
    output = Path(output) if output else default_output_path(checkpoint)
    if output.suffix.lower() != ".onnx":
        raise InputError(f"output {output} does not end in .onnx.", "name the output file *.onnx")
    check_writable(output)
    check_opset(opset)
    given_labels = read_labels(Path(labels)) if labels is not None else None  # parse errors before slow work
    if images is not None:
        list_images(Path(images))
    if not model.input_size and preprocessing.crop:
        model = replace(model, input_size=preprocessing.crop)

    step("loading the checkpoint")
    resolved = resolve_model(checkpoint, model)
    label_list = choose_labels(given_labels, labels, resolved.checkpoint.labels, resolved.num_classes)
    spec = apply_overrides(resolved.preprocessing, preprocessing)
    result = export_model(resolved, label_list, spec, batch=batch, opset=opset, progress=step)

    report = None
    data = result.model_proto.SerializeToString()  # once: the bytes checked are the bytes written
    if verify:
        step("verifying parity with PyTorch")
        report = verify_parity(data, resolved.reference, resolved.input_size, result.record, layer_module=resolved.module, images=images, progress=step)
        if not report.passed:
            layer = f"; first divergent layer: {report.first_divergent_layer}" if report.first_divergent_layer else ""
            raise CheckFailed(
                f"the exported model does not match PyTorch ({', '.join(report.failures())}{layer}); {output} was not written.",
                "run with --debug and report it; --no-verify writes the file anyway",
            )
    step(f"writing {output}")
    atomic_write_bytes(output, data)
    return ExportOutcome(output, result, resolved, report)


def model_options_from_record(onnx_path: Path, options: ModelOptions) -> tuple[ModelOptions, object]:
    """Fill unset model options from the ONNX file's record (layout, input size)."""
    from alexnet_deploy.checkpoints.layouts import LAYOUTS
    from alexnet_deploy.record import read_record_or_none

    proto = load_onnx(onnx_path, load_weights=False)
    record = read_record_or_none(proto, str(onnx_path))
    if record is None:
        return options, None
    filled = replace(options)
    if not filled.arch and not filled.model and record.layout in LAYOUTS:
        filled.arch = record.layout
    if not filled.input_size and record.details.get("input_size"):
        filled.input_size = int(record.details["input_size"])
    return filled, record


def verify_checkpoint(
    onnx_path: Path,
    checkpoint: Path,
    model: ModelOptions | None = None,
    images: Path | None = None,
    samples: int | None = None,
    batch_sizes=(1, 7),
    progress: Progress | None = None,
    runtime: str = "ort",
):
    """Parity report of ``onnx_path`` (any precision, run in ``runtime``) against ``checkpoint`` (does not raise on mismatch)."""
    require("torch", "torch", "Verifying against PyTorch")
    from alexnet_deploy.errors import LayoutError
    from alexnet_deploy.checkpoints.resolve import resolve_model
    from alexnet_deploy.verify.parity import verify_parity

    step = progress or (lambda message: None)
    onnx_path = check_input_file(Path(onnx_path), "ONNX file")
    checkpoint = check_input_file(Path(checkpoint), "checkpoint")
    _check_verify_inputs(samples, images)
    step("reading the ONNX model")
    options, record = model_options_from_record(onnx_path, model or ModelOptions())
    step("loading the checkpoint")
    try:
        resolved = resolve_model(checkpoint, options)
    except LayoutError as exc:
        if record is not None and record.layout.startswith("custom:") and not options.model:
            raise LayoutError(
                f"{onnx_path} was exported from a user class ({record.layout[7:]}) and the checkpoint alone does not build it.",
                "pass the same --model FILE.py:ClassName (and --model-kwargs) as at export",
            ) from None
        raise exc from None
    report = verify_parity(onnx_path, resolved.reference, resolved.input_size, record, layer_module=resolved.module, images=images, samples=samples, batch_sizes=batch_sizes, progress=step, runtime=runtime)
    if record is not None and record.source_sha256 and record.source_sha256 != resolved.checkpoint.sha256:
        report.notes.append("the ONNX file was exported from a different checkpoint file (sha256 differs)")
    return report


def _check_verify_inputs(samples: int | None, images: Path | None) -> None:
    if samples is not None and samples < 0:
        raise InputError(f"--samples {samples} is negative.", "use 0 or more random samples")
    if images is not None:
        list_images(Path(images))


def verify_against_onnx(
    onnx_path: Path,
    reference_path: Path,
    images: Path | None = None,
    samples: int | None = None,
    batch_sizes=(1, 7),
    progress: Progress | None = None,
    runtime: str = "ort",
):
    """Agreement report of ``onnx_path`` (e.g. INT8) against the FP32 ONNX ``reference_path`` (torch-free).

    ``runtime`` runs the candidate ('ort', 'openvino', 'openvino-bf16'); the reference always
    runs in onnxruntime FP32, so ``verify m.onnx --reference m.onnx --runtime openvino-bf16``
    judges OpenVINO's BF16 against FP32.
    """
    from alexnet_deploy.record import read_record_or_none
    from alexnet_deploy.quantize.recipes import graph_precision
    from alexnet_deploy.verify.parity import verify_parity
    from alexnet_deploy.runtimes.ort import OrtRuntime

    step = progress or (lambda message: None)
    onnx_path = check_input_file(Path(onnx_path), "ONNX file")
    reference_path = check_input_file(Path(reference_path), "reference ONNX file")
    _check_verify_inputs(samples, images)
    step("reading the ONNX models")
    proto = load_onnx(onnx_path)
    record = read_record_or_none(proto, str(onnx_path))
    ref_proto = load_onnx(reference_path)
    ref_record = read_record_or_none(ref_proto, str(reference_path))
    ref_precision = ref_record.precision if ref_record is not None else (graph_precision(ref_proto) or "fp32")
    if ref_precision != "fp32":
        raise InputError(f"the reference {reference_path} is {ref_precision}, not fp32.", "pass the FP32 model that `alexnet export` wrote as --reference")
    if record is None and ref_record is not None:
        # Metadata stripped from the candidate: judge it by its graph, preprocess as the reference does.
        record = replace(ref_record, precision=graph_precision(proto) or "fp32", details={})
    del proto, ref_proto
    with OrtRuntime(reference_path, precision="fp32") as reference:
        size = reference.info().input_shape[2]
        report = verify_parity(onnx_path, reference, size, record, images=images, samples=samples, batch_sizes=batch_sizes, progress=step, runtime=runtime)
    source = (record.details.get("quantization") or {}).get("source_onnx_sha256") if record is not None else None
    if source:
        from alexnet_deploy.fileio import sha256_file

        if source != sha256_file(reference_path):
            report.notes.append("the model was not made from this reference file (sha256 differs)")
    return report
