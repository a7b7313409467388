"""``alexnet package --triton REPO --kserve``: the manifest lands next to the repository and names what was asked."""

from __future__ import annotations

import json

import pytest


def test_package_kserve_writes_the_manifest(cli, half_width_onnx, tmp_path):
    yaml = pytest.importorskip("yaml")
    repo = tmp_path / "repo"
    report = tmp_path / "report.json"
    result = cli.ok("package", half_width_onnx, "--triton", repo, "--name", "flowers_v1", "--kserve",
                    "--storage-uri", "s3://team/flowers-repo", "--max-replicas", "4", "--memory", "3Gi", "--json", report)
    path = tmp_path / "flowers-v1-inferenceservice.yaml"
    manifest = yaml.safe_load(path.read_text())
    assert manifest == json.loads(report.read_text())["kserve"]["manifest"]
    assert manifest["metadata"] == {"name": "flowers-v1", "annotations": {"alexnet-deploy/triton-model": "flowers_v1"}}
    predictor = manifest["spec"]["predictor"]
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (1, 4)
    model = predictor["model"]
    assert (model["modelFormat"]["name"], model["protocolVersion"], model["runtime"], model["storageUri"]) == ("triton", "v2", "kserve-tritonserver", "s3://team/flowers-repo")
    assert model["resources"]["requests"] == {"cpu": "1", "memory": "3Gi"} and "nvidia.com/gpu" not in model["resources"]["limits"]
    assert (repo / "flowers_v1" / "config.pbtxt").is_file()  # storageUri points at this repository's root
    assert "kubectl apply -f" in result.stdout


def test_package_kserve_options_need_kserve_and_bad_values_write_nothing(cli, half_width_onnx, tmp_path):
    result = cli.fails(2, "package", half_width_onnx, "--triton", tmp_path / "repo", "--storage-uri", "s3://x/y")
    assert "--kserve" in result.stderr
    cli.fails(2, "package", half_width_onnx, "--triton", tmp_path / "repo", "--kserve", "--cpu", "lots")
    assert not (tmp_path / "repo").exists()
