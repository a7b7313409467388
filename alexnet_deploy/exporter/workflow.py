"""The export and verify jobs end to end, as the CLI runs them and as Python callers can.

Order matters for safety: every input is checked before slow work starts, and the ONNX
file is written only after it passed onnx.checker and (unless disabled) parity.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from alexnet_deploy.errors import CheckFailed, InputError, require
from alexnet_deploy.labels import read_labels
from alexnet_deploy.record import check_labels, default_labels
from alexnet_deploy.record import PreprocessingOverrides, apply_overrides
from alexnet_deploy.checkpoints.options import ModelOptions
from alexnet_deploy.fileio import atomic_write_bytes, check_writable
from alexnet_deploy.onnx_file import check_input_file, looks_like_checkpoint, looks_like_onnx
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
