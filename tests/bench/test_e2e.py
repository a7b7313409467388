"""`alexnet bench --e2e`: decode, model and end to end measured side by side, the bottleneck named, the
BENCHMARKS.md section written. Figures are checked for consistency, never against a time."""

from __future__ import annotations

import json

import pytest

from tiny_model import tiny_model, write_images


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    images = root / "imgs"
    write_images(images, 24)
    (images / "broken.jpg").write_bytes(b"nope")
    return tiny_model(root / "m.onnx"), tiny_model(root / "n.onnx", size=32), images


def test_e2e_report_rows_and_section(cli, setup, tmp_path):
    model, other, images = setup
    target = tmp_path / "BENCH.md"
    target.write_text("# Benchmarks\n\n## Runtime suite (`alexnet bench --suite`)\n\nkept as it was\n")
    runtimes = "ort,openvino" if _has_openvino() else "ort"
    result = cli.ok("bench", model, other, "--e2e", images, "--runtime", runtimes, "--duration", "0.05", "--workers", "2", "--batch", "8",
                    "--write", target, "--json")
    data = json.loads(result.stdout)
    assert data["images"]["count"] == 25 and data["settings"] == {"batch": 8, "workers": 2, "duration_s": 0.05, "threads": None}
    assert len(data["decode"]) == 2  # two preprocessings (16 and 32 pixel models), decoded once each
    for described, decode in data["decode"].items():
        assert set(decode) == {"preprocessing", "threads_1", "threads_2", "scaling"} and decode["threads_1"]["workers"] == 1
        assert decode["threads_1"]["images_per_s"] > 0 and decode["threads_2"]["images_per_s"] > 0 and decode["threads_1"]["seconds_per_image"] > 0
    assert [(r["runtime"], r["model"]) for r in data["rows"]] == [(rt, str(m)) for m in (model, other) for rt in runtimes.split(",")]
    for row in data["rows"]:
        assert row["bottleneck"] == ("decode" if row["decode_ips"] < row["model_ips"] else "model")
        assert row["e2e_share_of_model"] == pytest.approx(row["e2e_ips"] / row["model_ips"])
        assert row["shared_cores_bound_ips"] <= row["model_ips"]  # decoding on the same cores can only take away
    text = target.read_text()
    assert "kept as it was" in text and "## End to end from image files (`alexnet bench --e2e`)" in text
    assert "| runtime | model | precision | batch | model only (img/s) | decode only, 2 threads (img/s) | end to end (img/s) |" in text
    assert text.count(f"| ort | {model.name} |") == 1 and "ISA:" in text


def _has_openvino() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def test_e2e_refusals(cli, setup, tmp_path):
    model, _, images = setup
    assert "choose from ort, openvino, openvino-bf16" in cli.fails(2, "bench", model, "--e2e", images, "--runtime", "torch").stderr
    assert "one batch size" in cli.fails(2, "bench", model, "--e2e", images, "--batch", "1,8").stderr
    assert "holds no image files" in cli.fails(2, "bench", model, "--e2e", tmp_path).stderr
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.jpg").write_bytes(b"not an image")
    assert "none of the 1 image files could be decoded" in cli.fails(2, "bench", model, "--e2e", tmp_path / "junk", "--duration", "0.05").stderr
    assert "--workers applies to --e2e" in cli.fails(2, "bench", model, "--workers", "2").stderr
    assert "--e2e needs at least one ONNX model" in cli.fails(2, "bench", "--e2e", images).stderr


def test_e2e_stops_each_measurement_at_its_duration(cli, setup, tmp_path, monkeypatch):
    """A large folder is not decoded to the end by every measurement: --duration bounds each."""
    import alexnet_deploy.image_stream as image_stream

    model, _, _ = setup
    folder = tmp_path / "many"
    write_images(folder, 300)
    calls = []
    real = image_stream.model_input
    monkeypatch.setattr(image_stream, "model_input", lambda *a, **k: calls.append(1) or real(*a, **k))
    cli.ok("bench", model, "--e2e", folder, "--duration", "0.01", "--batch", "4", "--workers", "1")
    assert len(calls) < 300  # three measurements (decode on 1 thread, model, end to end): one full pass each was 600+


def test_e2e_defaults(cli, setup):
    """No options: batch 32, one decode thread per CPU, the ort runtime."""
    from alexnet_deploy.imaging import default_workers

    model, _, images = setup
    data = json.loads(cli.ok("bench", model, "--e2e", images, "--duration", "0.05", "--json").stdout)
    assert data["settings"]["batch"] == 32 and data["settings"]["workers"] == default_workers()
    assert [r["runtime"] for r in data["rows"]] == ["ort"] and data["rows"][0]["batch"] == 32


@pytest.mark.slow  # a full-size AlexNet, 224 px, on photo-sized JPEGs
def test_e2e_on_a_full_size_model(cli, half_width_onnx, tmp_path):
    import numpy as np

    from alexnet_deploy.datasets import synthetic_image

    rng = np.random.default_rng(1)
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(40):
        synthetic_image(rng).resize((500, 375)).save(folder / f"{i}.jpg", quality=85)
    data = json.loads(cli.ok("bench", half_width_onnx, "--e2e", folder, "--duration", "0.5", "--json").stdout)
    row = data["rows"][0]
    assert data["images"]["median_size"] == "500x375" and row["e2e_ips"] > 0 and row["model_ips"] > 0
    assert row["shared_cores_bound_ips"] <= row["model_ips"] and row["bottleneck"] in ("decode", "model")
