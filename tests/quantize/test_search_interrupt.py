"""Ctrl-C during the accuracy-aware INT8 search keeps its best file within the budget.

The tiny convolutional model of test_calibration keeps these fast; which candidate is "within
the budget" is forced (Budget.holds judged on the recipe last quantized) so the search takes a
known path. The interrupt is raised where a real one lands: inside a step (while the running
log is written) or after the search chose (while timing). References independent of the
interrupt handling: an uninterrupted run with the same forced budget, and a bare onnxruntime
session run on the held-out images, preprocessed by torchvision.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from test_calibration import CLASSES, _tiny_model, _torchvision_inputs, _write_folder

from alexnet_deploy.quantize import pipeline, recipes, search
from alexnet_deploy.record import read_record


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return _tiny_model(tmp_path_factory.mktemp("tiny") / "tiny.onnx")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    return _write_folder(root / "calib", 16, seed=8), _write_folder(root / "holdout", 6, seed=99)


def _force_budget(monkeypatch, within):
    """Budget.holds is ``within(method, excluded layers)`` of the candidate last quantized."""
    calls = []
    real = recipes.quantize_with_ranges

    def quantize_with_ranges(path, ranges, target, how, work, exclude=()):
        calls.append((how, frozenset(exclude)))
        return real(path, ranges, target, how, work, exclude)

    monkeypatch.setattr(recipes, "quantize_with_ranges", quantize_with_ranges)
    monkeypatch.setattr(search.Budget, "holds", lambda self, measured: within(*calls[-1]))


def _interrupt_at_trail_write(monkeypatch, number):
    """Ctrl-C while OUTPUT.search.json is written for the ``number``-th time (inside that search step)."""
    real = pipeline.atomic_write_bytes
    seen = []

    def atomic_write_bytes(path, data):
        if str(path).endswith(".search.json"):
            seen.append(path)
            if len(seen) == number:
                raise KeyboardInterrupt
        return real(path, data)

    monkeypatch.setattr(pipeline, "atomic_write_bytes", atomic_write_bytes)


def _quantize(model, images, out, **options):
    calib, holdout = images
    return pipeline.quantize_model(model, "int8", out, calib=calib, holdout=holdout, **{"measure_latency": False, **options})


def _trail(out):
    return json.loads(out.with_name(out.name + ".search.json").read_text())


def _holdout_accuracy(path, holdout):
    """top-1 of ``path`` on the held-out ImageFolder: torchvision's inputs, a bare onnxruntime session."""
    import torchvision

    labels = np.asarray(torchvision.datasets.ImageFolder(str(holdout)).targets)  # folder classes a, b = the model's labels a, b
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"input": _torchvision_inputs(holdout)})[0]
    assert logits.shape == (len(labels), len(CLASSES)) and np.isfinite(logits).all()
    return float((logits.argmax(1) == labels).mean())


def _entropy_only(how, excluded):
    return how == "entropy" and not excluded  # the second calibration method, step 2


def test_interrupt_inside_the_step_within_budget_writes_that_file(tiny, images, tmp_path, monkeypatch):
    _force_budget(monkeypatch, _entropy_only)
    reference = _quantize(tiny, images, tmp_path / "reference.int8.onnx")  # the same search, not interrupted
    assert reference.written and reference.search["met"] and len(reference.search["log"]) == 2

    out = tmp_path / "tiny.int8.onnx"
    _interrupt_at_trail_write(monkeypatch, 2)  # step 2 is measured (within the budget), its log line is being written
    with pytest.raises(KeyboardInterrupt) as caught:
        _quantize(tiny, images, out)
    assert out.exists(), "the candidate within the budget was lost"

    # The file is the one the finished search wrote: the same graph, the same record.
    written, expected = onnx.load(str(out)), onnx.load(str(reference.output))
    onnx.checker.check_model(written)
    assert written.graph == expected.graph
    got, want = read_record(written).details["quantization"], read_record(expected).details["quantization"]
    assert {k: v for k, v in got.items() if k != "measured"} == {k: v for k, v in want.items() if k != "measured"}
    assert got["search"]["method"] == "entropy" and got["search"]["float_layers"] == []
    assert got["measured"]["latency"] == {}  # not timed: it was interrupted
    for key in ("images", "accuracy", "accuracy_fp32", "top1_agreement", "top5_agreement"):
        assert got["measured"][key] == pytest.approx(want["measured"][key]), key

    # What the file does on the held-out images (a bare session) is what the search recorded for step 2.
    trail = _trail(out)
    assert trail["interrupted"] is True and trail["search_finished"] is False
    assert trail["written"] == str(out) and trail["written_step"] == 2 and trail["best"]["step"] == 2
    assert [s["step"] for s in trail["log"]] == [1, 2] and trail["log"][1]["within_budget"] and not trail["log"][0]["within_budget"]
    accuracy = _holdout_accuracy(out, images[1])
    assert accuracy == pytest.approx(trail["log"][1]["accuracy"]) == pytest.approx(got["measured"]["accuracy"])

    stop = caught.value  # the CLI prints what_was_left (exit 130)
    assert isinstance(stop, pipeline.QuantizeInterrupted)
    assert stop.written == out and stop.step == 2 and stop.steps == 2
    assert f"was written to {out}" in stop.what_was_left and "step 2" in stop.what_was_left
    # The file says what it is, and the trail describes its best point as the finished search's does.
    assert read_record(written).precision == read_record(expected).precision == "int8"
    finished = _trail(reference.output)
    assert trail["budget"] == finished["budget"] == search.Budget().to_dict(True)  # labelled: an accuracy budget
    step2 = trail["log"][1]
    assert trail["best"] == {"step": 2, "graph": step2["graph"], "method": "entropy", "float_layers": [], "measured": trail["best"]["measured"]}
    assert trail["best"]["measured"]["accuracy"] == pytest.approx(step2["accuracy"])
    assert f"({search.Budget().describe(True)})" in stop.what_was_left and f"{out} is left as it was" not in stop.what_was_left
    raw = out.with_name(out.name + ".search.json").read_text()
    assert raw.startswith('{\n "budget": {') and raw == json.dumps(trail, indent=1)  # indented for a person to read


def test_interrupt_before_any_candidate_within_budget_writes_nothing(tiny, images, tmp_path, monkeypatch):
    _force_budget(monkeypatch, lambda how, excluded: False)
    out = tmp_path / "tiny.int8.onnx"
    out.write_bytes(b"an earlier file")  # as a missed budget: an existing output is left as it was
    _interrupt_at_trail_write(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt) as caught:
        _quantize(tiny, images, out, allow_drop=True)
    assert out.read_bytes() == b"an earlier file"
    trail = _trail(out)
    assert trail.get("interrupted") is True and trail["written"] is None and trail["written_step"] is None
    assert len(trail["log"]) == 2 and not any(s["within_budget"] for s in trail["log"])
    score = lambda s: (s["accuracy"], -s["mean_rel_err"])  # noqa: E731  the search's ranking
    assert trail["best"]["step"] == max(trail["log"], key=score)["step"]
    stop = caught.value
    assert isinstance(stop, pipeline.QuantizeInterrupted) and stop.written is None and stop.steps == 2
    assert "nothing was written" in stop.what_was_left and "no candidate was within the budget yet" in stop.what_was_left
    assert "--allow-drop" in stop.what_was_left and f"{out} is left as it was" in stop.what_was_left
    assert f"({search.Budget().describe(True)}; best so far step " in stop.what_was_left
    assert trail["budget"] == search.Budget().to_dict(True)


def test_interrupt_while_timing_keeps_the_file_the_search_chose(tiny, images, tmp_path, monkeypatch):
    _force_budget(monkeypatch, lambda how, excluded: how == "minmax" and not excluded)  # step 1
    reference = _quantize(tiny, images, tmp_path / "reference.int8.onnx")
    assert reference.written and len(reference.search["log"]) == 1

    def timing(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "latency_comparison", timing)
    out = tmp_path / "tiny.int8.onnx"
    with pytest.raises(KeyboardInterrupt) as caught:
        _quantize(tiny, images, out, measure_latency=True)
    assert out.exists(), "the file the search chose was lost"
    assert onnx.load(str(out)).graph == onnx.load(str(reference.output)).graph
    trail = _trail(out)
    assert trail["interrupted"] is True and trail["search_finished"] is True and trail["written_step"] == 1
    assert _holdout_accuracy(out, images[1]) == pytest.approx(trail["log"][0]["accuracy"])
    assert isinstance(caught.value, pipeline.QuantizeInterrupted) and caught.value.written == out and caught.value.step == 1


def test_cli_interrupted_search_exits_130_and_says_what_it_wrote(cli, tiny, images, tmp_path, monkeypatch):
    _force_budget(monkeypatch, _entropy_only)
    _interrupt_at_trail_write(monkeypatch, 2)
    calib, holdout = images
    out = tmp_path / "tiny.int8.onnx"
    result = cli.fails(130, "quantize", tiny, "-p", "int8", "--calib", calib, "--holdout", holdout, "-o", out, "--no-latency")
    assert out.exists()
    onnx.checker.check_model(onnx.load(str(out)))
    assert _trail(out).get("written_step") == 2
    message = " ".join(result.stderr.split())  # rich may wrap the line
    assert f"was written to {out}" in message and "step 2" in message and "search.json lists every point tried" in message


def test_cli_interrupted_search_with_nothing_within_budget_writes_nothing(cli, tiny, images, tmp_path, monkeypatch):
    _force_budget(monkeypatch, lambda how, excluded: False)
    _interrupt_at_trail_write(monkeypatch, 1)
    calib, holdout = images
    out = tmp_path / "tiny.int8.onnx"
    result = cli.fails(130, "quantize", tiny, "-p", "int8", "--calib", calib, "--holdout", holdout, "-o", out, "--no-latency")
    assert not out.exists() and _trail(out).get("interrupted") is True
    message = " ".join(result.stderr.split())
    assert "nothing was written" in message and "is left as it was" not in message  # there was no file to leave
    assert "--allow-drop" not in message  # the note is for a run that asked for it


def test_interrupt_before_the_first_candidate_says_nothing_was_measured(tiny, images, tmp_path, monkeypatch):
    def quantize_with_ranges(*args, **kwargs):
        raise KeyboardInterrupt  # Ctrl-C while the first candidate is being quantized

    monkeypatch.setattr(recipes, "quantize_with_ranges", quantize_with_ranges)
    out = tmp_path / "tiny.int8.onnx"
    with pytest.raises(KeyboardInterrupt) as caught:
        _quantize(tiny, images, out)
    stop = caught.value
    assert isinstance(stop, pipeline.QuantizeInterrupted)
    assert (stop.written, stop.step, stop.steps) == (None, None, 0)
    trail_path = out.with_name(out.name + ".search.json")
    assert stop.what_was_left == f"interrupted before the INT8 search measured any candidate, so nothing was written; {trail_path} says so."
    trail = _trail(out)
    assert trail["best"] is None and trail["log"] == [] and trail["written"] is None and trail["interrupted"] is True
    assert not out.exists()


def test_interrupt_while_timing_a_file_outside_the_budget_writes_nothing_even_with_allow_drop(tiny, images, tmp_path, monkeypatch):
    _force_budget(monkeypatch, lambda how, excluded: False)  # the search finishes without a candidate within the budget

    def timing(*args, **kwargs):
        raise KeyboardInterrupt  # --allow-drop times the best file before writing it: Ctrl-C there

    monkeypatch.setattr(pipeline, "latency_comparison", timing)
    out = tmp_path / "tiny.int8.onnx"
    with pytest.raises(KeyboardInterrupt) as caught:
        _quantize(tiny, images, out, allow_drop=True, measure_latency=True)
    assert not out.exists()
    trail = _trail(out)
    assert trail["interrupted"] is True and trail["search_finished"] is True and trail["written"] is None
    stop = caught.value
    steps = len(trail["log"])
    assert isinstance(stop, pipeline.QuantizeInterrupted) and (stop.written, stop.step, stop.steps) == (None, None, steps)
    best = trail["best"]["step"]
    assert stop.what_was_left.startswith(
        f"interrupted after {steps} step(s) of the INT8 search (it had finished); no candidate was within the budget "
        f"({search.Budget().describe(True)}; best so far step {best}: ")
    assert stop.what_was_left.endswith(
        "), so nothing was written (--allow-drop writes a file outside the budget only when the run completes); "
        f"{out.with_name(out.name + '.search.json')} lists every point tried.")


def test_a_candidate_within_the_budget_that_fails_its_checks_is_not_written(tiny, tmp_path):
    """The search judged a candidate within the budget, but its logits are not finite: nothing is written, and the
    message says why (not "no candidate was within the budget"), with no --allow-drop note (it met the budget)."""
    proto = onnx.load(str(tiny))
    kept = search.SearchResult(proto=proto, met=True, recipe={"graph": "plain", "method": "minmax", "float_layers": [],
                                                             "measured": {"accuracy": 0.5, "drop_points": 0.0}},
                               calibration={}, log=[{"step": 1}], step=1, logits=np.array([[np.nan, 0.0]], dtype=np.float32))
    out = tmp_path / "tiny.int8.onnx"
    stop = pipeline._keep_interrupted(kept, kept.log, False, output=out, source=tiny, record=read_record(proto), precision="int8",
                                      target="cpu", budget=search.Budget(), truth=np.array([0]), compared=None,
                                      fp32_logits=np.array([[1.0, 0.0]], dtype=np.float32), allow_drop=True)
    assert not out.exists() and (stop.written, stop.step, stop.steps) == (None, None, 1)
    trail = out.with_name(out.name + ".search.json")
    assert stop.what_was_left == (
        f"interrupted after 1 step(s) of the INT8 search; the candidate within the budget failed its checks "
        f"({search.Budget().describe(True)}; best so far step 1: plain, minmax; top-1 50.0% (+0.0 points)), so nothing was written; "
        f"{trail} lists every point tried.")
    assert json.loads(trail.read_text())["written"] is None
