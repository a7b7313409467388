"""``alexnet optimize`` end to end on a trained model: the one the default ``alexnet quickstart`` trains and optimizes.

The default quickstart (run once here, as a user runs it) ends in a real ``optimize`` of a
model it trained; the tests below check that run's files and report from every side.
References: PyTorch's own forward on the same images (torchvision's transforms),
``alexnet eval`` run separately on each variant (the accuracy numbers must be equal exactly),
``alexnet bench`` run separately (speed only to the same order of magnitude: the machine is
shared), the files themselves, and the same command again through the CLI's own flags.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

import trained_model as tm

pytestmark = [pytest.mark.slow, pytest.mark.run_first]  # the quickstart fixture alone is 1.5-2 minutes


@pytest.fixture(scope="module")
def quickstarted(tmp_path_factory):
    """The default ``alexnet quickstart`` in a subprocess: (its folder, the finished process, its --json report)."""
    target = tmp_path_factory.mktemp("quickstart") / "qs"
    report = target.parent / "quickstart.json"
    result = subprocess.run([sys.executable, "-m", "alexnet_deploy", "quickstart", str(target), "--json", str(report)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return target, result, json.loads(report.read_text())


def test_quickstart_runs_the_main_job(quickstarted):
    """The seeded checkpoint exported and verified, then a model trained here and a real optimize
    whose FP32 accuracy is what PyTorch itself scores."""
    import onnx

    target, result, data = quickstarted
    assert "PASS" in result.stdout and "2 ONNX LRN node" in result.stdout and "Try next" in result.stdout
    assert {p.name for p in target.iterdir()} == {"alexnet.pth", "alexnet.onnx", "labels.txt", "samples", "shapes"}
    assert data["export"]["verification"]["passed"] is True and data["checkpoint"] == str(target / "alexnet.pth")
    written = onnx.load(data["export"]["output"])  # the report describes the file that was written
    assert data["export"]["lrn_nodes"] == sum(n.op_type == "LRN" for n in written.graph.node) == 2
    assert all(line in result.stdout for line in data["next"])

    # The trained part: every variant evaluated, and FP32's top-1 equal to PyTorch's own on the same images.
    optimized = data["optimize"]
    assert {row["variant"] for row in optimized["rows"]} >= {"fp32", "fp16", "int8"}
    assert "A trained model, optimized" in result.stdout and "Recommendation" in result.stdout and "top-1 changed" in result.stdout
    fp32 = next(row for row in optimized["rows"] if row["variant"] == "fp32" and row["runtime"] == "ort")
    reference = _torch_top1(data["training"]["checkpoint"], data["training"]["val_images"])
    assert fp32["images"] == 200 and abs(fp32["top1"] - reference) <= 1 / 200  # one borderline image may round the other way
    assert reference > 0.5  # trained: far above the 20% of chance on 5 classes
    for goal in ("latency", "throughput"):
        assert (target / "shapes" / "optimized" / f"best-{goal}.onnx").is_file()
    again = subprocess.run([sys.executable, "-m", "alexnet_deploy", "quickstart", str(target)], capture_output=True, text=True)
    assert again.returncode == 2 and "not empty" in again.stderr


def _torch_top1(checkpoint, folder) -> float:
    """Top-1 of the saved shapes model in PyTorch, on torchvision's ImageFolder with torchvision's transforms."""
    import torch
    import torchvision
    from torchvision import transforms as T

    from alexnet_deploy.checkpoints.demo_shapes import CLASSES, CROP, MEAN, RESIZE, STD

    model = torchvision.models.alexnet(weights=None, num_classes=len(CLASSES))
    model.load_state_dict(torch.load(checkpoint, weights_only=True)["model_state_dict"])
    dataset = torchvision.datasets.ImageFolder(str(folder), transform=T.Compose([T.Resize(RESIZE), T.CenterCrop(CROP), T.ToTensor(), T.Normalize(MEAN, STD)]))
    images = torch.stack([image for image, _ in dataset])
    with torch.no_grad():
        predicted = model.eval()(images).argmax(1)
    return float((predicted == torch.tensor(dataset.targets)).float().mean())


@pytest.fixture(scope="module")
def optimized(quickstarted):
    """(the quickstart's optimize folder, the same run as `alexnet optimize` arguments, its report).

    The arguments are what a user types for the quickstart's run (quickstart.py calls the
    library with the same options), so rerunning them must resume every stage.
    """
    from alexnet_deploy.quickstart import BENCH_SECONDS

    target, _, data = quickstarted
    shapes = target / "shapes"
    out = shapes / "optimized"
    args = ["optimize", data["training"]["checkpoint"], "--data", shapes / "val", "--calib", shapes / "train", "-o", out, "--batch", "1,8",
            "--duration", BENCH_SECONDS, "--arch", "torchvision", "--input-size", tm.CROP, "--resize", tm.RESIZE, "--crop", tm.CROP,
            "--mean", ",".join(map(str, tm.MEAN)), "--std", ",".join(map(str, tm.STD))]
    return out, args, data["optimize"]


def test_every_file_is_written(optimized):
    out, _, report = optimized
    for name in ("model.onnx", "model.fp16.onnx", "model.int8.onnx", "report.md", "report.json", "pareto.png", "best-latency.onnx", "best-throughput.onnx"):
        assert (out / name).is_file(), name
    assert Image.open(out / "pareto.png").size[0] > 400
    assert json.loads((out / "report.json").read_text())["rows"] == report["rows"]
    assert "| variant | runtime |" in (out / "report.md").read_text()
    from alexnet_deploy.optimize import available_bf16, default_runtimes

    bf16, why = available_bf16()
    assert {r["variant"] for r in report["rows"]} == {"fp32", "fp16", "int8"} | ({"bf16"} if bf16 else set())
    if not bf16:  # skipped with its reason (no openvino, or a CPU without native BF16)
        assert any(s["variant"] == "bf16" and s["reason"] == why for s in report["skipped"])
    # every variant measured on every runtime of the CPU target (onnxruntime, and OpenVINO where installed)
    runtimes, _ = default_runtimes("cpu")
    for variant in ("fp32", "fp16", "int8"):
        assert {r["runtime"] for r in report["rows"] if r["variant"] == variant} == set(runtimes)


def test_accuracy_equals_alexnet_eval_and_speed_is_plausible(cli, optimized):
    out, args, report = optimized
    data = args[args.index("--data") + 1]
    for row in report["rows"]:
        # accuracy is measured on the row's own runtime (OpenVINO's INT8/BF16 kernels round their own way)
        evaluation = json.loads(cli.ok("eval", row["file"], "--data", data, "--runtime", row["runtime"], "--json").stdout)
        assert (row["top1"], row["top5"], row["images"]) == (evaluation["top1"], evaluation["top5"], evaluation["n"])
    fp32 = next(r for r in report["rows"] if r["variant"] == "fp32")
    bench = json.loads(cli.ok("bench", out / "model.onnx", "--runtime", "ort", "--batch", "8", "--duration", "0.3", "--json").stdout)
    ratio = bench["results"][0]["throughput_ips"] / fp32["throughput_ips"]
    assert 0.1 < ratio < 10  # same order of magnitude: timings on a shared machine are noise-prone


def test_recommendation_is_within_budget_and_copied(optimized):
    out, _, report = optimized
    budget = report["budget"]
    for goal in ("latency", "throughput"):
        rec = report["recommendation"][goal]
        row = next(r for r in report["rows"] if r["file"] == rec["from"] and r["runtime"] == rec["runtime"])
        assert 100 * (budget["fp32_top1"] - row["top1"]) <= budget["max_drop_points"]
        assert (out / f"best-{goal}.onnx").read_bytes() == Path(rec["from"]).read_bytes()
    within = [r for r in report["rows"] if r["within_budget"]]
    assert report["recommendation"]["latency"]["latency_b1_ms"] == min(r["latency_b1_ms"] for r in within)


def test_rerun_resumes_and_a_changed_budget_redoes_only_int8(cli, optimized):
    # Last in this file on purpose: the changed budget rewrites the folder the tests above read.
    _, args, first = optimized
    again = json.loads(cli.ok(*args, "--json").stdout)
    assert again["stages"]["ran"] == [] and set(again["stages"]["resumed"]) == set(first["stages"]["ran"])
    assert again["rows"] == first["rows"]
    changed = json.loads(cli.ok(*args, "--max-drop", "2", "--json").stdout)
    assert "int8" in changed["stages"]["ran"] and "export" in changed["stages"]["resumed"] and "eval-fp32" in changed["stages"]["resumed"]
