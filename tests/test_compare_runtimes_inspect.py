"""Comparison metrics against hand computations; the runtime contract; inspect reports."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from alexnet_deploy.verify.metrics import compare_logits
from alexnet_deploy.errors import InputError


def test_metrics_against_hand_computed_values():
    ref = np.array([[1.0, 2.0, 4.0], [0.0, -3.0, 1.0]])
    out = np.array([[1.0, 2.5, 4.0], [0.0, -3.0, 1.3]])
    c = compare_logits(out, ref)
    np.testing.assert_allclose(c.abs_err, [0.5, 0.3])
    np.testing.assert_allclose(c.rel_err, [0.5 / 4, 0.3 / 3])
    cos0 = (1 + 5 + 16) / (np.linalg.norm(out[0]) * np.linalg.norm(ref[0]))
    assert c.cosine[0] == pytest.approx(cos0)
    assert c.summary()["max_rel_err"] == pytest.approx(0.125) and c.worst_sample == 0


def test_top_k_agreement_counts_flips_but_not_exact_ties():
    ref = np.array([[0.0, 0.0, 5.0, 1.0], [3.0, 2.9, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    out = np.array([[0.0, 0.0, 5.0, 1.0], [2.9, 3.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    c = compare_logits(out, ref)
    assert list(c.top1) == [True, False, True]  # row 3: all tied, any argmax agrees
    assert c.cosine[2] == 1.0  # both all-zero


def test_non_finite_output_fails_every_metric():
    c = compare_logits(np.array([[np.nan, 1.0]]), np.array([[1.0, 1.0]]))
    assert c.rel_err[0] == np.inf and c.cosine[0] == -1.0


def test_comparison_edge_cases():
    """Per-sample scales, zero and tiny references, near-ties and top-5 membership (hand values)."""
    # Rows of very different scale: every statistic is per row, not over the whole batch.
    ref = np.array([[1000.0, 1.0, 0.0, 0.0, 0.0, 0.0], [0.01, 0.02, 0.0, 0.0, 0.0, 0.0]])
    out = np.array([[1000.0, 1.0, 0.0, 0.0, 0.0, 0.0], [0.02, 0.01, 0.0, 0.0, 0.0, 0.0]])
    c = compare_logits(out, ref)
    assert list(c.top1) == [True, False]  # row 2's argmax flipped, whatever row 1's scale
    np.testing.assert_allclose(c.rel_err, [0.0, 0.01 / 0.02])  # tiny magnitudes are not floored to 1
    np.testing.assert_allclose(c.cosine, [1.0, 0.0004 / 0.0005])  # nor are tiny norms
    # A zero reference row: equal candidate -> 0, any difference (even < 1) -> inf; cosine 0 unless both zero.
    c = compare_logits(np.array([[0.0, 0.0], [0.5, 0.0]]), np.zeros((2, 2)))
    assert list(c.rel_err) == [0.0, np.inf]
    assert list(c.cosine) == [1.0, 0.0]
    # NaN in one sample fails only that sample.
    c = compare_logits(np.array([[np.nan, 1.0], [1.0, 2.0]]), np.array([[1.0, 1.0], [1.0, 2.0]]))
    assert list(c.rel_err) == [np.inf, 0.0] and c.cosine[0] == -1.0 and c.cosine[1] == pytest.approx(1.0)
    # Near-ties: within 1e-6 of the row's magnitude counts as a tie, beyond it as a flip.
    big = np.array([[100.0, 100.0 - 5e-5, 0.0]])
    assert compare_logits(np.array([[0.0, 1.0, 0.0]]), big).top1[0]  # 5e-5 < 1e-6 * 100
    small = np.array([[1e-3, 1e-3 - 5e-7, 0.0]])
    assert not compare_logits(np.array([[0.0, 1.0, 0.0]]), small).top1[0]  # 5e-7 > 1e-6 * 1e-3
    # Top-5 is five classes: the candidate's sixth choice does not matter.
    ref = np.arange(10.0)[None, ::-1].copy()  # class 0 highest
    out = np.array([[9.0, 8.0, 7.0, 6.0, 5.0, 0.0, 0.0, 0.0, 0.0, 4.5]])  # 6th choice: class 9 (ref's lowest)
    assert compare_logits(out, ref).top5[0]
    # float32 logits are compared in float64: identical vectors give cosine 1 exactly enough,
    # and large logits do not overflow to NaN.
    x = np.random.default_rng(0).standard_normal((3, 1000)).astype(np.float32)
    assert np.abs(compare_logits(x, x).cosine - 1.0).max() <= 1e-12
    huge = (x * np.float32(1e20)).astype(np.float32)
    assert np.abs(compare_logits(huge, huge).cosine - 1.0).max() <= 1e-12
    with pytest.raises(ValueError, match="logit shapes differ"):
        compare_logits(np.zeros((1, 3)), np.zeros((1, 4)))


def test_summary_and_worst_sample_against_numpy():
    ref = np.random.default_rng(1).standard_normal((7, 10))
    out = ref + np.random.default_rng(2).standard_normal((7, 10)) * np.linspace(0.01, 1.0, 7)[:, None]
    c = compare_logits(out, ref)
    rel = np.abs(out - ref).max(axis=1) / np.abs(ref).max(axis=1)
    cos = (out * ref).sum(axis=1) / (np.linalg.norm(out, axis=1) * np.linalg.norm(ref, axis=1))
    top1 = out.argmax(axis=1) == ref.argmax(axis=1)
    top5 = [set(np.argsort(-o)[:5]) <= set(np.argsort(-r)[:5]) for o, r in zip(out, ref)]
    assert c.summary() == pytest.approx({
        "max_abs_err": np.abs(out - ref).max(), "max_rel_err": rel.max(), "min_cosine": cos.min(),
        "top1_agreement": top1.mean(), "top5_agreement": np.mean(top5), "samples": 7,
    })
    assert c.worst_sample == int(np.argmax(rel)) and c.samples == 7
    empty = compare_logits(np.zeros((0, 4)), np.zeros((0, 4)))
    assert empty.summary() == {"max_abs_err": 0.0, "max_rel_err": 0.0, "min_cosine": 1.0, "top1_agreement": 1.0, "top5_agreement": 1.0, "samples": 0}
    assert empty.worst_sample == -1


def test_tensor_rel_err_hand_values():
    from alexnet_deploy.verify.metrics import tensor_rel_err

    ref = np.array([[2.0, -4.0], [1.0, 0.0]], np.float32)
    assert tensor_rel_err(ref + np.float32(0.5), ref) == pytest.approx(0.5 / 4)
    assert tensor_rel_err(ref, ref) == 0.0
    assert tensor_rel_err(ref[:1], ref) == np.inf  # shapes differ
    assert tensor_rel_err(np.array([np.inf, 1.0]), np.array([1.0, 1.0])) == np.inf
    assert tensor_rel_err(np.zeros(3), np.zeros(3)) == 0.0
    assert tensor_rel_err(np.array([0.0, 1e-3, 0.0]), np.zeros(3)) == np.inf  # any error on a zero tensor
    assert tensor_rel_err(np.zeros((0,)), np.zeros((0,))) == 0.0
    # float32 inputs: the difference is taken in float64 (1 + 2**-23 - 1 is not lost)
    a, b = np.array([1.0 + 2.0 ** -23], np.float32), np.array([1.0], np.float64)
    assert tensor_rel_err(a, b) == pytest.approx(2.0 ** -23)


@pytest.fixture(scope="module")
def runtimes(half_width, half_width_onnx):
    from alexnet_deploy.runtimes.ort import OrtRuntime
    from alexnet_deploy.runtimes.torch_runtime import TorchRuntime

    made = [OrtRuntime(half_width_onnx), TorchRuntime(half_width[1], 224, "seed003")]
    yield made
    for runtime in made:
        runtime.close()


def test_runtimes_agree_on_logits(runtimes):
    x = np.random.default_rng(3).standard_normal((3, 3, 224, 224), dtype=np.float32)
    ort_out, torch_out = (r.run(x) for r in runtimes)
    assert ort_out.shape == torch_out.shape == (3, 5)
    assert np.abs(ort_out - torch_out).max() <= 1e-4 * np.abs(torch_out).max()


@pytest.mark.parametrize("index", [0, 1])
def test_runtime_contract(runtimes, index):
    runtime = runtimes[index]
    info = runtime.info()
    assert info.runtime in ("ort", "torch") and info.device == "cpu" and info.precision == "fp32"
    assert info.input_shape[1:] == (3, 224, 224) and info.min_batch == 1 and info.max_batch is None
    with pytest.raises(InputError, match="shape"):
        runtime.run(np.zeros((1, 3, 200, 200), np.float32))
    with pytest.raises(InputError, match="dtype"):
        runtime.run(np.zeros((1, 3, 224, 224), np.uint8))
    out = runtime.run(np.zeros((1, 3, 224, 224), np.float64))  # other float dtypes are converted
    assert out.dtype == np.float32


def test_closed_runtime_refuses_to_run(half_width_onnx):
    from alexnet_deploy.runtimes.ort import OrtRuntime

    with OrtRuntime(half_width_onnx) as runtime:
        pass
    with pytest.raises(InputError, match="closed"):
        runtime.run(np.zeros((1, 3, 224, 224), np.float32))


def test_runtime_side_imports_without_torch(half_width_onnx):
    """The onnxruntime side (runtimes, preprocessing, metadata) works where importing torch fails."""
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import numpy as np\n"
        "from alexnet_deploy.runtimes.ort import OrtRuntime\n"
        "from alexnet_deploy.record import read_record_from_path\n"
        "from alexnet_deploy.preprocess import preprocess_batch\n"
        f"r = OrtRuntime({str(half_width_onnx)!r}); rec = read_record_from_path({str(half_width_onnx)!r})\n"
        "print(r.run(np.zeros((1, 3, 224, 224), np.float32)).shape, rec.labels[0])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(1, 5) daisy"


def test_inspect_checkpoint_json(cli, seed_checkpoints):
    path, model, _ = seed_checkpoints("paper-hand-lrn", 10)
    data = json.loads(cli.ok("inspect", path, "--json").stdout)
    assert data["layout"] == "paper-hand-lrn" and data["num_classes"] == 10 and data["input_size"] == 224
    assert data["parameters"] == sum(p.numel() for p in model.parameters())
    assert [s["name"] for s in data["lrn"]] == ["N1", "N2"]
    assert all(s["onnx_lrn"]["size"] == 5 for s in data["lrn"])


def test_inspect_ambiguous_checkpoint_names_the_choices(cli, seed_checkpoints):
    path, _, _ = seed_checkpoints("caffe-227", 10)
    result = cli.ok("inspect", path)
    assert "caffe-227" in result.stdout and "paper-224" in result.stdout
    refused = cli.fails(2, "export", path)
    assert "--arch caffe-227 or --arch paper-224" in refused.stderr and "padding" in refused.stderr


def test_inspect_onnx_json(cli, half_width_onnx):
    data = json.loads(cli.ok("inspect", half_width_onnx, "--json").stdout)
    assert data["kind"] == "onnx" and data["opset"] == 18 and data["layout"] == "half-width"
    assert data["inputs"][0] == {"name": "input", "dtype": "float32", "shape": ["batch", 3, 224, 224]}
    assert data["outputs"][0]["shape"] == ["batch", 5]
    assert data["op_histogram"]["Conv"] == 5 and data["op_histogram"]["Gemm"] == 3
    table = cli.ok("inspect", half_width_onnx).stdout
    assert "half-width" in table and "daisy" in table


def test_help_explains_every_command(cli):
    import typer

    # Every command registered on the app, so a new command cannot slip by without help.
    group = typer.main.get_command(cli.app)
    commands = group.commands
    assert len(commands) >= 10
    top = " ".join(cli.ok("--help").stdout.split())
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
                assert max(param.opts, key=len) in page, f"{name}: {param.opts} missing from --help"

    assert "alexnet-deploy" in cli.ok("--version").stdout


@pytest.mark.slow
def test_quickstart_runs_the_main_job(tmp_path):
    target = tmp_path / "qs"
    result = subprocess.run([sys.executable, "-m", "alexnet_deploy", "quickstart", str(target)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "PASS" in result.stdout and "2 ONNX LRN node" in result.stdout and "Try next" in result.stdout
    assert {p.name for p in target.iterdir()} == {"alexnet.pth", "alexnet.onnx", "labels.txt", "samples"}
    again = subprocess.run([sys.executable, "-m", "alexnet_deploy", "quickstart", str(target)], capture_output=True, text=True)
    assert again.returncode == 2 and "not empty" in again.stderr
