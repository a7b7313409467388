"""`package --triton --image-input`: an ensemble that takes encoded images, its Python step running the
toolkit's own preprocessing with nothing but numpy and Pillow; external weights copied or refused; a
file that does not load never packaged."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from tiny_model import tiny_model, torchvision_input, write_images
from triton_config import parse

# Runs the generated model.py as Triton's Python backend would: alexnet_deploy cannot be imported,
# triton_python_backend_utils is a stand-in with the names the step uses, the config arrives as JSON.
DRIVER = r'''
import json, sys, types, importlib.util
import numpy as np
sys.modules["alexnet_deploy"] = None  # not installed in Triton's Python: the inlined imaging code must do
pb = types.ModuleType("triton_python_backend_utils")
class Tensor:
    def __init__(self, name, array): self.name, self.array = name, array
    def as_numpy(self): return self.array
class InferenceResponse:
    def __init__(self, output_tensors, error=None): self.output_tensors, self.error = output_tensors, error
class TritonError:
    def __init__(self, message): self.message = message
pb.Tensor, pb.InferenceResponse, pb.TritonError = Tensor, InferenceResponse, TritonError
pb.get_input_tensor_by_name = lambda request, name: request[name]
sys.modules["triton_python_backend_utils"] = pb
spec = importlib.util.spec_from_file_location("model", sys.argv[1])
module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)
model = module.TritonPythonModel()
model.initialize({"model_config": open(sys.argv[2]).read()})
files = json.loads(sys.argv[3])
requests = [{"image": Tensor("image", np.array([[open(f, "rb").read()] for f in files], dtype=object))},
            {"image": Tensor("image", np.array([[b"not an image"]], dtype=object))}]
good, bad = model.execute(requests)
np.save(sys.argv[4], good.output_tensors[0].array)
print(json.dumps({"error": bad.error.message, "good_error": good.error, "name": good.output_tensors[0].name}))
'''


def test_image_ensemble_configs_and_the_python_step_equal_torchvision(cli, tmp_path):
    from google.protobuf import json_format

    from alexnet_deploy.record import read_record_from_path

    model = tiny_model(tmp_path / "m.onnx")
    repo = tmp_path / "repo"
    report = json.loads(cli.ok("package", model, "--triton", repo, "--image-input", "--max-batch", "8", "--json").stdout)
    assert report["image_ensemble"] == str(repo / "alexnet_image") and report["preprocess"] == str(repo / "alexnet_preprocess")
    ensemble, step, main = parse(repo / "alexnet_image" / "config.pbtxt"), parse(repo / "alexnet_preprocess" / "config.pbtxt"), parse(repo / "alexnet" / "config.pbtxt")
    assert ensemble.platform == "ensemble" and ensemble.max_batch_size == step.max_batch_size == main.max_batch_size == 8
    assert [s.model_name for s in ensemble.ensemble_scheduling.step] == ["alexnet_preprocess", "alexnet"]
    first, second = ensemble.ensemble_scheduling.step
    assert first.output_map["input"] == second.input_map["input"]  # the preprocessed tensor flows into the model
    assert second.output_map["logits"] == ensemble.output[0].name == "logits" and list(ensemble.output[0].dims) == [3]
    assert step.backend == "python" and step.input[0].name == ensemble.input[0].name == "image"
    assert list(step.output[0].dims) == list(main.input[0].dims) == [3, 16, 16]
    assert (repo / "alexnet_image" / "1").is_dir() and (repo / "alexnet_image" / "labels.txt").read_text() == (repo / "alexnet" / "labels.txt").read_text()

    files = write_images(tmp_path / "imgs", 4, seed=3)
    config = tmp_path / "config.json"
    config.write_text(json_format.MessageToJson(step, preserving_proto_field_name=True))  # what Triton hands the model
    out = tmp_path / "batch.npy"
    result = subprocess.run([sys.executable, "-c", DRIVER, str(repo / "alexnet_preprocess" / "1" / "model.py"), str(config),
                             json.dumps([str(f) for f in files]), str(out)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["good_error"] is None and answer["name"] == "input" and "image 0: cannot be decoded" in answer["error"]
    spec = read_record_from_path(model).preprocessing
    np.testing.assert_allclose(np.load(out), np.stack([torchvision_input(f, spec) for f in files]), rtol=0, atol=1e-6)


def test_image_input_refusals_write_nothing(cli, tmp_path):
    model = tiny_model(tmp_path / "m.onnx")
    repo = tmp_path / "repo"
    (repo / "alexnet_image").mkdir(parents=True)
    assert "alexnet_image already exists" in cli.fails(2, "package", model, "--triton", repo, "--image-input").stderr
    assert sorted(p.name for p in repo.iterdir()) == ["alexnet_image"]  # the model entry was not written first


def test_external_weights_travel_with_the_model(cli, tmp_path):
    import onnx

    (tmp_path / "ext").mkdir()
    model = tiny_model(tmp_path / "ext" / "m.onnx", external_data=True)
    data = model.with_name("m.onnx.data")
    assert data.exists() and model.stat().st_size < 2000  # the weights are outside the .onnx
    repo = tmp_path / "repo"
    cli.ok("package", model, "--triton", repo)
    assert (repo / "alexnet" / "1" / "m.onnx.data").read_bytes() == data.read_bytes()
    onnx.checker.check_model(str(repo / "alexnet" / "1" / "model.onnx"))  # loads from its own folder, weights included
    data.unlink()
    result = cli.fails(2, "package", model, "--triton", repo / "again")
    assert "keeps its weights in m.onnx.data, which is missing" in result.stderr and not (repo / "again").exists()


def test_a_file_that_does_not_load_is_never_packaged(cli, tmp_path):
    import onnx

    model = tiny_model(tmp_path / "m.onnx")
    proto = onnx.load(str(model))
    proto.graph.node[1].op_type = "NoSuchOperator"  # the record and the shapes still read; the graph does not load
    onnx.save(proto, str(tmp_path / "broken.onnx"))
    result = cli.fails(2, "package", tmp_path / "broken.onnx", "--triton", tmp_path / "repo")
    assert "does not load" in result.stderr and "nothing was packaged" in result.stderr
    assert not (tmp_path / "repo" / "alexnet").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".repo-")]


def test_force_without_image_input_refuses_to_orphan_the_image_entries(cli, tmp_path):
    model = tiny_model(tmp_path / "m.onnx")
    repo = tmp_path / "repo"
    cli.ok("package", model, "--triton", repo, "--image-input")
    before = (repo / "alexnet" / "config.pbtxt").read_text()
    result = cli.fails(2, "package", model, "--triton", repo, "--force", "--max-batch", "4")
    assert "alexnet_preprocess belongs to the model being replaced" in result.stderr and "--image-input" in result.stderr
    assert (repo / "alexnet" / "config.pbtxt").read_text() == before
    cli.ok("package", model, "--triton", repo, "--force", "--max-batch", "4", "--image-input")
    assert all("max_batch_size: 4" in (repo / n / "config.pbtxt").read_text() for n in ("alexnet", "alexnet_preprocess", "alexnet_image"))
