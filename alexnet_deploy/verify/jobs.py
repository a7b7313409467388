"""The verify jobs as the CLI runs them: an ONNX file against its checkpoint, or against its FP32 ONNX.

Both return a ``VerifyReport`` (``verify.parity``) and never raise on a mismatch: the
caller decides what a failed check means (the CLI exits 1).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable

from alexnet_deploy.checkpoints.options import ModelOptions
from alexnet_deploy.errors import InputError, require
from alexnet_deploy.onnx_file import check_input_file, load_onnx, looks_like_onnx
from alexnet_deploy.preprocess import list_images

Progress = Callable[[str], None]


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
    if looks_like_onnx(checkpoint):
        raise InputError(
            f"--checkpoint {checkpoint} is an ONNX model, not a PyTorch checkpoint.",
            f"pass the .pth it was exported from, or compare with an FP32 ONNX model: alexnet verify {onnx_path} --reference {checkpoint}",
        )
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
    from alexnet_deploy.record import graph_precision
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
