"""The CLI as a new user meets it: help for every command and option, the quickstart."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest



def test_help_explains_every_command(cli):
    import typer

    # Every command registered on the app, so a new command cannot slip by without help.
    group = typer.main.get_command(cli.app)
    commands = group.commands
    assert len(commands) >= 10
    top = " ".join(cli.ok("--help").stdout.split())
    assert "<bool>" not in top, top
    for name, command in commands.items():
        assert name in top
        assert (command.help or "").strip(), f"{name} has no help text"
        page = " ".join(cli.ok(name, "--help").stdout.split())
        assert "Usage" in page
        # flags take no value, so help must not suggest one (`--no-verify <bool>` once led users
        # to type `--no-verify true`); arguments appear by name, not as {name}
        assert "<bool>" not in page and "{" not in page.split("Usage:", 1)[1].split("╭", 1)[0], page
        for param in command.params:
            assert (getattr(param, "help", None) or "").strip(), f"{name}: {param.name} has no help text"
            if param.param_type_name == "option" and not getattr(param, "hidden", False):
                # the option's own long name appears on its help page (Typer may vendor click,
                # so the kind is read from the parameter, not from an isinstance check)
                option = max(param.opts, key=len)  # whole option names: --calib must not pass on --calib-samples
                assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", page), f"{name}: {param.opts} missing from --help"

    assert "alexnet-deploy" in cli.ok("--version").stdout


def test_help_paragraphs_wrap_at_the_terminal_width_not_at_the_sources(cli):
    """In an 80-column terminal every line of a description but a paragraph's last is nearly full.

    Typer keeps a docstring's own line breaks, which in a narrower terminal turned each source
    line into a long line and a short one ("...when the images are" / "an").
    """
    import typer

    described = [name for name, command in typer.main.get_command(cli.app).commands.items() if "\n\n" in (command.help or "")]
    assert len(described) >= 5
    for name in described:
        page = cli.runner.invoke(cli.app, [name, "--help"], env={"COLUMNS": "80", "TERMINAL_WIDTH": "80"}).stdout
        body = page.split("Usage:", 1)[1].split("╭", 1)[0]
        paragraphs = [[]]
        for line in (raw.strip() for raw in body.splitlines()[1:]):
            if line:
                paragraphs[-1].append(line)
            elif paragraphs[-1]:
                paragraphs.append([])
        assert sum(map(len, paragraphs)) >= 3, page
        for paragraph in paragraphs:
            short = [line for line in paragraph[:-1] if len(line) < 55]
            assert not short, f"{name} --help breaks a paragraph early: {short}"


@pytest.mark.slow
def test_quickstart_runs_the_main_job(tmp_path):
    """The default quickstart, as a user runs it: the seeded checkpoint exported and verified, then
    a model trained here and a real optimize whose FP32 accuracy is what PyTorch itself scores."""
    target = tmp_path / "qs"
    report = tmp_path / "quickstart.json"
    result = subprocess.run([sys.executable, "-m", "alexnet_deploy", "quickstart", str(target), "--json", str(report)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "PASS" in result.stdout and "2 ONNX LRN node" in result.stdout and "Try next" in result.stdout
    assert {p.name for p in target.iterdir()} == {"alexnet.pth", "alexnet.onnx", "labels.txt", "samples", "shapes"}
    import json

    import onnx

    data = json.loads(report.read_text())
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


@pytest.mark.slow  # an export in a subprocess
def test_quickstart_skip_training_makes_only_the_seeded_files(tmp_path):
    target = tmp_path / "qs"
    result = subprocess.run([sys.executable, "-m", "alexnet_deploy", "quickstart", str(target), "--skip-training", "--json", "-"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    import json

    data = json.loads(result.stdout)
    assert {p.name for p in target.iterdir()} == {"alexnet.pth", "alexnet.onnx", "labels.txt", "samples"}
    assert "optimize" not in data and data["export"]["verification"]["passed"] is True
