"""Parity of an ONNX model with the model it came from (a PyTorch checkpoint or the FP32 ONNX).

The same inputs go through the reference and the candidate runtime (onnxruntime by default,
or OpenVINO) at each requested batch size.
Criteria depend on the candidate's precision (recorded in its metadata):

- fp32: every sample's relative error (max |onnx - ref| over max |ref|) <= 1e-4 and
  cosine similarity >= 0.99999; inputs are seeded random tensors plus ``--images``.
- fp16: top-1 agreement >= 99% and every sample's cosine >= 0.999.
- bf16 (an FP32 file run by OpenVINO in BF16, ``--runtime openvino-bf16``): every sample's
  cosine >= 0.999 as for FP16, top-1 agreement >= 95%. BF16 keeps FP32's range but only 8
  mantissa bits (FP16: 11), so logits move by ~1% relative: enough to swap near-tied
  classes (seen on random-weight models, 1 in 32 synthetic images), while damage shows in
  the cosine first.
- int8, int8-dynamic: top-1 agreement >= 95% and every sample's cosine >= 0.95 (a floor
  that catches wrecked layers; INT8 logits of a healthy model stay above 0.98).

Lower precisions are judged on images (``--images``, else synthetic images drawn by the
toolkit), because random tensors lie outside the ranges INT8 was calibrated for. On an
FP32 failure the first layer whose output diverges is found by comparing intermediate
outputs of both.
"""

from __future__ import annotations

import ast
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from alexnet_deploy.verify.metrics import compare_logits, tensor_rel_err
from alexnet_deploy.errors import InputError
from alexnet_deploy.record import ModelRecord
from alexnet_deploy.preprocess import list_images, load_images
from alexnet_deploy.runtimes.base import pad_rows
from alexnet_deploy.runtimes.ort import OrtRuntime
from alexnet_deploy.runtimes.torch_runtime import TorchRuntime

# Criteria per precision. FP32 differs from PyTorch only by summation order.
THRESHOLDS: dict[str, dict[str, float]] = {
    "fp32": {"max_rel_err": 1e-4, "min_cosine": 0.99999},
    "fp16": {"min_top1_agreement": 0.99, "min_cosine": 0.999},
    "bf16": {"min_top1_agreement": 0.95, "min_cosine": 0.999},
    "int8": {"min_top1_agreement": 0.95, "min_cosine": 0.95},
    "int8-dynamic": {"min_top1_agreement": 0.95, "min_cosine": 0.95},
}
# Synthetic images used when a lower-precision model is verified without --images.
SYNTHETIC_IMAGES = 32
# An intermediate tensor "diverges" above this relative error (FP32 layers agree to ~1e-6).
LAYER_DIVERGENCE = 1e-3


@dataclass
class VerifyReport:
    """The outcome of a parity check; ``to_dict`` gives the stable JSON fields."""

    passed: bool
    max_abs_err: float
    max_rel_err: float
    min_cosine: float
    top1_agreement: float
    top5_agreement: float
    samples: int
    batch_sizes: list[int]
    first_divergent_layer: str | None
    worst_sample: dict[str, Any]
    thresholds: dict[str, float]
    precision: str = "fp32"
    images: int = 0
    skipped_images: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def failures(self) -> list[str]:
        """The criteria that failed, in words."""
        return failed_criteria(self.thresholds, self.max_rel_err, self.min_cosine, self.top1_agreement)


def failed_criteria(thresholds: dict[str, float], max_rel_err: float, min_cosine: float, top1_agreement: float) -> list[str]:
    """The criteria in ``thresholds`` that the figures miss, in words (empty: passed)."""
    out = []
    if "max_rel_err" in thresholds and not max_rel_err <= thresholds["max_rel_err"]:
        out.append(f"max relative error {max_rel_err:.3g} > {thresholds['max_rel_err']:g}")
    if "min_cosine" in thresholds and not min_cosine >= thresholds["min_cosine"]:
        out.append(f"min cosine {min_cosine:.7f} < {thresholds['min_cosine']}")
    if "min_top1_agreement" in thresholds and not top1_agreement >= thresholds["min_top1_agreement"]:
        out.append(f"top-1 agreement {top1_agreement:.1%} < {thresholds['min_top1_agreement']:.0%}")
    return out


def parse_batch_sizes(text: str | Sequence[int] | None) -> list[int]:
    """``"1,7"`` -> [1, 7] (None: the default 1,7); InputError for anything but positive integers."""
    from alexnet_deploy.parsing import parse_positive_ints

    return [1, 7] if text is None else parse_positive_ints(text, "--batch-sizes", "1,7")


def build_inputs(input_size: int, samples: int, record: ModelRecord | None, images: Path | None, seed: int = 0, synthetic: int = 0) -> tuple[np.ndarray, list[str], list[str]]:
    """Seeded random inputs, synthetic images and preprocessed ``images``: (batch, per-sample source names, skipped image paths)."""
    if samples < 0:
        raise InputError(f"--samples {samples} is negative.", "use 0 or more random samples")
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal((samples, 3, input_size, input_size), dtype=np.float32)]
    sources = [f"random[{i}]" for i in range(samples)]
    skipped: list[str] = []
    if synthetic and record is not None:
        from alexnet_deploy.datasets import synthetic_images
        from alexnet_deploy.preprocess import preprocess_batch

        arrays.append(preprocess_batch(synthetic_images(synthetic, seed), record.preprocessing))
        sources += [f"synthetic[{i}]" for i in range(synthetic)]
    if images is not None:
        paths = list_images(Path(images))
        if record is None:
            raise InputError("--images needs the model's preprocessing, but the ONNX file has no alexnet-deploy metadata.", "re-export it with `alexnet export`")
        batch, used, bad = load_images(paths, record.preprocessing)
        skipped = [str(p) for p in bad]
        if not used:
            raise InputError(f"no decodable images under {images} ({len(bad)} files could not be read).", "point --images at a folder of .jpg/.png files")
        arrays.append(batch)
        sources += [str(p) for p in used]
    data = np.concatenate(arrays)
    if not len(data):
        raise InputError("nothing to compare: --samples 0 and no --images.", "use --samples 8 or give --images DIR")
    return data, sources, skipped


def verify_parity(
    onnx_model,
    reference,
    input_size: int,
    record: ModelRecord | None,
    layer_module=None,
    images: Path | None = None,
    samples: int | None = None,
    batch_sizes: Sequence[int] = (1, 7),
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    runtime: str = "ort",
) -> VerifyReport:
    """Compare ``onnx_model`` (path, bytes or ModelProto) with ``reference``.

    ``reference`` is a torch module or a loaded :class:`Runtime` (e.g. the FP32 ONNX in
    onnxruntime). ``samples`` random inputs are used (default 8 for FP32; none for lower
    precisions, which also get synthetic images when no ``images`` are given). ``layer_module``
    (default: a torch ``reference``) is the eager module whose layers are compared with
    the ONNX graph's intermediate outputs when FP32 parity fails. ``runtime`` names the
    candidate's runtime (runtimes.open_runtime); 'openvino-bf16' is judged as bf16.
    """
    from alexnet_deploy.runtimes import open_runtime, split_name
    from alexnet_deploy.runtimes.base import Runtime

    step = progress or (lambda message: None)
    precision = split_name(runtime)[1] or (record.precision if record else "fp32")
    if precision not in THRESHOLDS:
        raise InputError(f"this model's precision {precision!r} has no verification criteria.", f"verify models of precision {', '.join(THRESHOLDS)}")
    if samples is None:
        samples = 8 if precision == "fp32" else 0
    synthetic = SYNTHETIC_IMAGES if precision != "fp32" and images is None else 0
    proto_bytes = onnx_model.SerializeToString() if hasattr(onnx_model, "SerializeToString") else onnx_model
    source = proto_bytes if isinstance(proto_bytes, bytes) else Path(proto_bytes)
    runtime = OrtRuntime(source, precision=precision) if runtime == "ort" else open_runtime(source, runtime)
    info = runtime.info()
    if info.precision != precision:  # e.g. the file's record says fp32 but OpenVINO ran bf16: judge what ran
        raise InputError(f"{info.runtime} ran this model in {info.precision}, not {precision}.", "verify with the runtime and precision you deploy")
    reference_side = reference if isinstance(reference, Runtime) else TorchRuntime(reference, input_size, "reference")
    if tuple(info.input_shape[1:]) != tuple(reference_side.info().input_shape[1:]):
        raise InputError(
            f"the ONNX model takes input {list(info.input_shape[1:])} but the reference takes {list(reference_side.info().input_shape[1:])}.",
            "compare with the model it was made from (same --arch/--model/--input-size as at export)",
        )
    notes: list[str] = []
    sizes = list(batch_sizes)
    fixed = info.max_batch
    for side in (info, reference_side.info()):
        if side.max_batch is not None and sizes != [side.max_batch]:
            notes.append(f"a model has a fixed batch of {side.max_batch}; compared at that batch only")
            sizes = [side.max_batch]
    if synthetic:
        notes.append(f"compared on {synthetic} synthetic images; pass --images DIR to judge on real ones")
    data, sources, skipped = build_inputs(input_size, samples, record, images, seed, synthetic)
    probe = data[:1]
    classes = reference_side.run_all(probe).shape[1]
    onnx_classes = runtime.run_all(probe).shape[1]
    if classes != onnx_classes:
        raise InputError(
            f"the ONNX model has {onnx_classes} classes but the reference has {classes}.",
            "verify against the model this ONNX file was made from",
        )

    candidates, references = [], []
    for size in sizes:
        step(f"comparing at batch {size} ({len(data)} samples)")
        references.append(reference_side.run_all(data, size))
        candidates.append(runtime.run_all(data, size))
    comparison = compare_logits(np.concatenate(candidates), np.concatenate(references))
    summary = comparison.summary()
    thresholds = THRESHOLDS[precision]
    passed = not failed_criteria(thresholds, summary["max_rel_err"], summary["min_cosine"], summary["top1_agreement"])
    worst = comparison.worst_sample
    worst_index = worst % len(data)
    worst_info = {
        "index": int(worst_index),
        "source": sources[worst_index],
        "batch_size": sizes[worst // len(data)],
        "rel_err": float(comparison.rel_err[worst]),
        "cosine": float(comparison.cosine[worst]),
    }
    divergent = None
    module = layer_module if layer_module is not None else (None if isinstance(reference, Runtime) else reference)
    if not passed and precision == "fp32" and module is not None:
        step("finding the first layer that diverges")
        divergent = first_divergent_layer(proto_bytes, module, data[worst_index:worst_index + 1], fixed)
        if divergent is None:
            notes.append("no single layer could be matched between the two graphs; only the final logits differ")
    runtime.close()
    return VerifyReport(
        passed=bool(passed),
        max_abs_err=summary["max_abs_err"],
        max_rel_err=summary["max_rel_err"],
        min_cosine=summary["min_cosine"],
        top1_agreement=summary["top1_agreement"],
        top5_agreement=summary["top5_agreement"],
        samples=len(data),
        batch_sizes=sizes,
        first_divergent_layer=divergent,
        worst_sample=worst_info,
        thresholds=thresholds,
        precision=precision,
        images=len(sources) - samples,
        skipped_images=skipped,
        notes=notes,
    )


def _torch_layer_outputs(module, sample: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """(module name, output) of every leaf module call, in execution order ('name#k' for repeat calls)."""
    import torch

    records: list[tuple[str, np.ndarray]] = []
    counts: dict[str, int] = {}
    handles = []
    for name, mod in module.named_modules():
        if not name or list(mod.children()):
            continue

        def hook(mod, args, out, _name=name):
            if isinstance(out, torch.Tensor):
                index = counts.get(_name, 0)
                counts[_name] = index + 1
                # Clone: an in-place ReLU would otherwise overwrite the recorded tensor.
                records.append((_name if index == 0 else f"{_name}#{index}", out.detach().float().clone().numpy()))

        handles.append(mod.register_forward_hook(hook))
    try:
        with torch.no_grad():
            module(torch.from_numpy(sample))
    finally:
        for handle in handles:
            handle.remove()
    return records


def _onnx_layer_outputs(proto) -> dict[str, str]:
    """Module name ('name#k' for repeat calls) -> the ONNX tensor holding that call's output."""
    calls: dict[str, str] = {}
    counts: dict[str, int] = {}
    previous = None
    for node in proto.graph.node:
        scopes = next((p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.name_scopes"), None)
        if scopes is None or not node.output:
            previous = None
            continue
        try:
            names = ast.literal_eval(scopes)  # written as a Python list repr
        except (ValueError, SyntaxError):
            previous = None
            continue
        owner = names[-2] if len(names) >= 2 else ""
        if not owner:
            previous = None
            continue
        if owner != previous:  # a new call of this module starts
            index = counts.get(owner, 0)
            counts[owner] = index + 1
        key = owner if counts[owner] == 1 else f"{owner}#{counts[owner] - 1}"
        calls[key] = node.output[0]
        previous = owner
    return calls


def first_divergent_layer(onnx_bytes, module, sample: np.ndarray, fixed_batch: int | None = None) -> str | None:
    """The first module (execution order) whose ONNX output differs from PyTorch's, or None.

    None also when the two graphs cannot be matched layer by layer; this is a diagnosis
    on top of a failed check, so it never raises.
    """
    try:
        return _first_divergent_layer(onnx_bytes, module, sample, fixed_batch)
    except Exception:
        return None


def _first_divergent_layer(onnx_bytes, module, sample: np.ndarray, fixed_batch: int | None) -> str | None:
    import onnx

    proto = onnx.load_from_string(onnx_bytes) if isinstance(onnx_bytes, bytes) else onnx.load(str(onnx_bytes))
    try:
        torch_outputs = _torch_layer_outputs(module, sample)
    except Exception:
        return None  # e.g. a TorchScript module: no hooks
    tensors = _onnx_layer_outputs(proto)
    wanted = [(name, tensors[name]) for name, _ in torch_outputs if name in tensors]
    if not wanted:
        return None
    existing = {o.name for o in proto.graph.output}
    known = {v.name: v for v in proto.graph.value_info}
    for _, tensor in wanted:
        if tensor not in existing:
            elem = known[tensor].type.tensor_type.elem_type if tensor in known else onnx.TensorProto.FLOAT
            proto.graph.output.append(onnx.helper.make_tensor_value_info(tensor, elem, None))
            existing.add(tensor)
    runtime = OrtRuntime(proto.SerializeToString())
    batch = sample if fixed_batch is None else pad_rows(sample, fixed_batch)
    values = runtime.run_outputs(batch, [t for _, t in wanted])
    runtime.close()
    by_name = dict(torch_outputs)
    for (name, _), value in zip(wanted, values):
        reference = by_name[name]
        value = value[:1]
        if value.shape != reference.shape:
            continue  # the graphs split this layer differently; not comparable
        if tensor_rel_err(value, reference) > LAYER_DIVERGENCE:
            return name
    return None
