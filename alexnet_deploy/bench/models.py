"""The benchmark models: a seed-000-shaped AlexNet exported and quantized every way (cached in a folder)."""

from __future__ import annotations

from pathlib import Path

from alexnet_deploy.fileio import atomic_write

VARIANTS = (("fp32", None, None), ("fp16", "fp16", "cpu"), ("int8", "int8", "cpu"), ("int8-trt", "int8", "tensorrt"), ("int8-dynamic", "int8-dynamic", "cpu"))


def make_models(work: Path) -> dict[str, Path]:
    """Export the seed-000-shaped model and quantize it every way; returns tag -> path."""
    import torch

    from alexnet_deploy.checkpoints.layouts import LAYOUTS
    from alexnet_deploy.checkpoints.options import ModelOptions
    from alexnet_deploy.quantize.pipeline import quantize_model
    from alexnet_deploy.exporter.workflow import export_checkpoint

    work.mkdir(parents=True, exist_ok=True)
    checkpoint = work / "seed000.pth"
    if not checkpoint.exists():
        torch.manual_seed(0)
        model = LAYOUTS["caffe-227"].build(10)
        for module in model.modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
                torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                torch.nn.init.normal_(module.bias, std=0.01)
        atomic_write(checkpoint, lambda tmp: torch.save(model.state_dict(), tmp))
    paths = {"fp32": work / "seed000.onnx"}
    if not paths["fp32"].exists():
        export_checkpoint(checkpoint, paths["fp32"], ModelOptions(arch="caffe-227"))
    for tag, precision, target in VARIANTS[1:]:
        paths[tag] = work / f"seed000.{tag}.onnx"
        if not paths[tag].exists():
            calib = "synthetic" if precision == "int8" else None
            quantize_model(paths["fp32"], precision, paths[tag], calib=calib, calib_samples=64 if calib else None, target=target, measure_latency=False,
                           search=False, allow_drop=True)  # a random-weight model timed for speed: its accuracy means nothing
    return paths
