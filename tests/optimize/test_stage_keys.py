"""What invalidates ``optimize``'s cached export stage (fast: no model is run)."""

from __future__ import annotations

from alexnet_deploy.checkpoints.options import ModelOptions
from alexnet_deploy.optimize import export_inputs


def test_editing_the_model_file_redoes_the_export(tmp_path):
    checkpoint = tmp_path / "model.pth"
    checkpoint.write_bytes(b"weights")
    model_file = tmp_path / "net.py"
    model_file.write_text("class Net: pass\n")
    options = ModelOptions(model=f"{model_file}:Net")
    before = export_inputs(checkpoint, options, None)
    assert export_inputs(checkpoint, options, None) == before  # same files, same key: resumed
    model_file.write_text("class Net:\n    width = 2\n")  # same name, other class
    assert export_inputs(checkpoint, options, None) != before
    checkpoint.write_bytes(b"other weights")
    assert export_inputs(checkpoint, ModelOptions(), None)["model_file"] is None
    assert export_inputs(checkpoint, ModelOptions(arch="torchvision"), None) != export_inputs(checkpoint, ModelOptions(), None)
