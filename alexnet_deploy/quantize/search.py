"""Accuracy-aware static INT8: find the cheapest recipe whose measured accuracy is within budget.

The search, cheapest first, stops at the first candidate within the budget:
1. calibration methods (the requested one first) on the original graph;
2. cross-layer equalization of the FP32 graph (checked against the original to 1e-4),
   then equalization plus bias correction, with the best method so far;
3. per-layer sensitivity (what is lost when only that layer is quantized) and, for the CPU
   target, what keeping that layer in float costs in measured milliseconds; then layers kept
   in float one more at a time (never all), those that regain the most accuracy per
   millisecond lost first, so the search stops at a fast file inside the budget rather than
   at the first one.

Every candidate is quantized and measured on the held-out images: top-1 accuracy against
the labels when there are labels, else top-1 agreement with FP32. Calibration ranges are
computed once per (graph, method) and reused by every candidate of that pair, and no file is
quantized twice: the all-INT8 candidate measured earlier is the baseline the speed costs are
timed against, and the first fallback is the file its layer's speed cost was timed on.

Interrupted (KeyboardInterrupt), the search raises SearchInterrupted carrying the best candidate
measured so far (its ModelProto, recipe, holdout logits and step), so the caller can keep it.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from alexnet_deploy.errors import InputError
from alexnet_deploy.fileio import scratch_dir
from alexnet_deploy.quantize import equalize as eq
from alexnet_deploy.quantize import recipes
from alexnet_deploy.verify.paired import signed

DEFAULT_MAX_DROP = 1.0  # top-1 points
DEFAULT_MIN_AGREEMENT = 99.0  # percent
EQUALIZE_CHECK_IMAGES = 64
MINMAX_BATCH = 8  # images per calibration run for MinMax (a model with a fixed batch uses its own)


@dataclass
class Budget:
    """Labelled held-out images: top-1 may drop at most ``max_drop`` points; unlabelled: agreement >= ``min_agreement`` %."""

    max_drop: float = DEFAULT_MAX_DROP
    min_agreement: float = DEFAULT_MIN_AGREEMENT

    def kind(self, labelled: bool) -> str:
        return "accuracy" if labelled else "agreement"

    def holds(self, measured: dict[str, Any]) -> bool:
        if measured.get("accuracy") is not None:
            return measured["drop_points"] <= self.max_drop + 1e-9
        return 100 * measured["top1_agreement"] >= self.min_agreement - 1e-9

    def describe(self, labelled: bool) -> str:
        return f"top-1 drop <= {self.max_drop:g} points" if labelled else f"top-1 agreement with FP32 >= {self.min_agreement:g}%"

    def to_dict(self, labelled: bool) -> dict[str, Any]:
        return {"kind": self.kind(labelled), "max_drop_points": self.max_drop, "min_agreement_pct": self.min_agreement, "text": self.describe(labelled)}


def measure(logits: np.ndarray, reference: np.ndarray, truth: np.ndarray | None) -> dict[str, Any]:
    """Accuracy (with labels), agreement with FP32 and the mean relative logit error of one candidate."""
    agreement = float((logits.argmax(1) == reference.argmax(1)).mean())
    scale = np.maximum(np.abs(reference).max(axis=1), 1e-12)
    error = float((np.abs(logits - reference).max(axis=1) / scale).mean())
    result = {"top1_agreement": agreement, "mean_rel_err": error, "accuracy": None, "accuracy_fp32": None, "drop_points": None}
    if truth is not None:
        accuracy, fp32 = float((logits.argmax(1) == truth).mean()), float((reference.argmax(1) == truth).mean())
        result.update(accuracy=accuracy, accuracy_fp32=fp32, drop_points=100 * (fp32 - accuracy))
    return result


def _score(measured: dict[str, Any]) -> tuple[float, float]:
    """Higher is better: the budget's metric, then a smaller logit error."""
    metric = measured["accuracy"] if measured["accuracy"] is not None else measured["top1_agreement"]
    return (metric, -measured["mean_rel_err"])


@dataclass
class Candidate:
    graph: str  # "original", "equalized", "equalized+bias"
    method: str
    float_layers: list[str]
    measured: dict[str, Any]
    proto: Any = field(repr=False, default=None)
    logits: Any = field(repr=False, default=None)  # on the held-out images
    step: int | None = None  # its step in the log (recorded candidates only)


@dataclass
class SearchResult:
    """The chosen candidate (the best measured when none was within budget) and everything tried."""

    proto: Any
    met: bool
    recipe: dict[str, Any]
    calibration: dict[str, Any]
    log: list[dict[str, Any]]
    step: int | None = None  # the chosen candidate's step in the log
    logits: Any = field(repr=False, default=None)  # the chosen candidate's logits on the held-out images


class SearchInterrupted(KeyboardInterrupt):
    """Ctrl-C during the search: ``best`` is what the search would have returned, as a SearchResult: the
    candidate within the budget (``met``) once one was measured, else the best so far (``met`` False),
    or None when none was measured; ``log``: every step so far."""

    def __init__(self, best: SearchResult | None, log: list[dict[str, Any]]):
        super().__init__(f"INT8 search interrupted after {len(log)} step(s)")
        self.best, self.log = best, log


class _Graphs:
    """FP32 graphs prepared for quantization, and their calibration ranges, made once each."""

    def __init__(self, work: Path, images, target, input_name, batch, fixed, progress):
        self.work, self.images, self.target = work, images, target
        self.input_name, self.batch, self.fixed, self.progress = input_name, batch, fixed, progress
        self.prepared: dict[str, tuple[Path, Any]] = {}
        self.ranges: dict[tuple[str, str], tuple[Any, list[int]]] = {}
        self.extremes: dict = {}  # the histogram methods' range pre-pass, per graph: run once, not per method

    def add(self, tag: str, source: Path | None = None, proto=None) -> None:
        import onnx

        folder = self.work / tag.replace("+", "-")
        folder.mkdir()
        if proto is not None:
            source = folder / "source.onnx"
            onnx.save(proto, str(source))
        self.prepared[tag] = recipes.prepare_for_quantization(source, folder)

    def calibrated(self, tag: str, method: str):
        key = (tag, method)
        if key not in self.ranges:
            path, _ = self.prepared[tag]
            self.progress(f"calibrating ({tag}, {method})")
            # onnxruntime's histogram calibrators stack the batches of one call, so they must be equal: 1 image each.
            batch = self.batch if self.fixed else (MINMAX_BATCH if method == "minmax" else 1)
            ranges, used = recipes.calibrate(path, self.images, self.target, method, self.input_name, batch, self.fixed, self.work / tag.replace("+", "-"), self.progress,
                                             extremes=self.extremes)
            if ranges is None:
                where = self.images.images.root if getattr(self.images, "images", None) is not None else "the calibration set"
                raise InputError(f"none of the {self.images.count} image files under {where} could be decoded.", "point it at a folder of readable .jpg/.png images")
            self.ranges[key] = (ranges, used)
        return self.ranges[key]

    def layers(self, tag: str) -> list[str]:
        """Names of the quantizable layers (Conv/Gemm/MatMul) in graph order."""
        return [n.name for n in self.prepared[tag][1].graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]

    def nodes(self, tag: str) -> list[str]:
        return [n.name for n in self.prepared[tag][1].graph.node]


def float_cost_ms(int8, with_float, sample: np.ndarray, rounds: int = 3) -> float:
    """Milliseconds a batch of ``sample`` takes longer with ``with_float`` (a ModelProto) than on ``int8``
    (an open OrtRuntime of the all-INT8 model, made once for every layer), on onnxruntime's CPU,
    measured round-robin so the machine's drift hits both alike."""
    from alexnet_deploy.runtimes.ort import OrtRuntime
    from alexnet_deploy.timing import round_robin_medians

    with OrtRuntime(with_float.SerializeToString()) as mixed:
        medians = round_robin_medians({"int8": lambda: int8.run(sample), "mixed": lambda: mixed.run(sample)}, rounds=rounds, min_runs=3)
    return 1000.0 * (float(np.median(medians["mixed"])) - float(np.median(medians["int8"])))


def search_int8(source: Path, proto, images, compared: np.ndarray, reference: np.ndarray, truth, budget: Budget, target: str,
                method: str, input_name: str, batch: int, fixed: bool, search: bool = True, progress=None, on_step=None) -> SearchResult:
    """Quantize ``source`` (FP32 ONNX at a path, ``proto`` its ModelProto) within ``budget``; see the module doc.

    ``on_step(log, best)`` is called after every step (the log so far, the best candidate's
    measurements and recipe): a caller records the points tried, so an interrupted search
    still says what it found.
    """
    log: list[dict[str, Any]] = []
    best: Candidate | None = None
    chosen: Candidate | None = None  # the first candidate within the budget: what the search returns
    equalized_pairs: list[dict] = []
    corrected: list[str] = []

    with scratch_dir("alexnet-search-") as tmp:
        graphs = _Graphs(Path(tmp), images, target, input_name, batch, fixed, progress)
        graphs.add("original", source=Path(source))

        def quantize(tag: str, how: str, exclude=()):
            ranges, _ = graphs.calibrated(tag, how)
            return recipes.quantize_with_ranges(graphs.prepared[tag][0], ranges, target, how, graphs.work, exclude)

        def attempt(tag: str, how: str, exclude=(), float_layers=(), technique="calibration method", record=True, quantized=None) -> Candidate:
            """Quantize (unless ``quantized``, that candidate's ModelProto made before, is given) and measure."""
            nonlocal best, chosen
            started = time.perf_counter()
            graphs.calibrated(tag, how)  # its progress comes before the measuring line
            progress(f"measuring: {technique} ({tag}, {how}{', ' + str(len(float_layers)) + ' layer(s) in float' if float_layers else ''})")
            if quantized is None:
                quantized = quantize(tag, how, exclude)
            logits = eq.run_logits(quantized, compared)
            measured = measure(logits, reference, truth)
            candidate = Candidate(tag, how, list(float_layers), measured, quantized, logits if record else None)
            if record:
                candidate.step = len(log) + 1
                if best is None or _score(measured) > _score(best.measured):
                    best = candidate
                within = budget.holds(measured)
                if within and chosen is None:
                    chosen = candidate
                note({"technique": technique, "graph": tag, "method": how, "float_layers": list(float_layers),
                      **{k: measured[k] for k in ("accuracy", "drop_points", "top1_agreement", "mean_rel_err")},
                      "within_budget": within, "seconds": round(time.perf_counter() - started, 2)})
            return candidate

        def note(entry: dict[str, Any]) -> None:
            log.append({"step": len(log) + 1, **entry})
            if on_step is not None:
                on_step(log, None if best is None else {"step": best.step, "graph": best.graph, "method": best.method, "float_layers": best.float_layers,
                                                        "measured": best.measured})

        def finish(candidate: Candidate, met: bool) -> SearchResult:
            _, used = graphs.ranges[(candidate.graph, candidate.method)]
            recipe = {
                "graph": candidate.graph, "method": candidate.method, "equalized_layers": equalized_pairs if candidate.graph != "original" else [],
                "bias_corrected_layers": corrected if candidate.graph == "equalized+bias" else [], "float_layers": candidate.float_layers,
                "measured": candidate.measured, "searched": search,
            }
            return SearchResult(candidate.proto, met, recipe, {"method": candidate.method, **images.describe(used)}, log, candidate.step, candidate.logits)

        try:
            methods = [method] + ([m for m in recipes.METHODS if m != method] if search else [])
            for how in methods:
                candidate = attempt("original", how)
                if budget.holds(candidate.measured):
                    return finish(candidate, True)
            if not search:
                return finish(candidate, False)

            # 2. Cross-layer equalization of the FP32 graph, verified before it is quantized.
            started = time.perf_counter()
            progress("equalizing layer pairs")
            equalized, equalized_pairs = eq.equalize(proto)
            check = compared[:EQUALIZE_CHECK_IMAGES]
            difference = eq.check_equivalent(proto, equalized, check) if equalized_pairs else 0.0
            usable = bool(equalized_pairs) and difference <= eq.TOLERANCE
            note({"technique": "cross-layer equalization (FP32 check)", "pairs": [p["pair"] for p in equalized_pairs],
                  "fp32_max_rel_diff": difference, "images": len(check), "within_tolerance": usable, "seconds": round(time.perf_counter() - started, 2)})
            if usable:
                how = best.method
                graphs.add("equalized", proto=equalized)
                candidate = attempt("equalized", how, technique="cross-layer equalization")
                if budget.holds(candidate.measured):
                    return finish(candidate, True)
                progress("correcting biases")
                biased, corrected = eq.bias_correct(equalized, _calibration_sample(images))  # input means from calibration images, not the held-out ones
                graphs.add("equalized+bias", proto=biased)
                candidate = attempt("equalized+bias", how, technique="equalization + bias correction")
                if budget.holds(candidate.measured):
                    return finish(candidate, True)
            else:
                equalized_pairs = []

            # 3. Each layer's accuracy cost in INT8 and speed cost in float, then fallback to float,
            # cheapest accuracy first: the layers that regain the most accuracy per millisecond lost.
            # Every candidate so far kept no layer in float, so the best one is this graph and method
            # with every layer in INT8: the baseline the speed costs are measured against.
            tag, how, all_int8 = best.graph, best.method, best.proto
            layers, nodes = graphs.layers(tag), graphs.nodes(tag)
            base = _score(measure(reference, reference, truth))[0]
            rows = batch if fixed else min(len(compared), 8)  # a fixed-batch model takes exactly its batch
            sample = np.resize(compared[:rows], (rows,) + compared.shape[1:])  # repeated when there are fewer images
            timed = target == "cpu"  # onnxruntime's CPU speed says nothing about a TensorRT engine's
            ranked = []
            first = None  # (rank, layer, ModelProto with that layer alone in float): the first fallback candidate, not quantized twice
            with contextlib.ExitStack() as stack:
                if timed:
                    from alexnet_deploy.runtimes.ort import OrtRuntime

                    int8 = stack.enter_context(OrtRuntime(all_int8.SerializeToString()))
                for layer in layers:
                    started = time.perf_counter()
                    only = attempt(tag, how, exclude=[n for n in nodes if n != layer], technique="sensitivity", record=False)
                    loss = base - _score(only.measured)[0]  # what quantizing this layer alone costs in accuracy
                    cost = kept_float = None
                    if timed:
                        progress(f"timing {layer} in float")
                        kept_float = quantize(tag, how, exclude=[layer])
                        cost = max(float_cost_ms(int8, kept_float, sample), 0.0)
                    # accuracy regained per millisecond lost (a layer as good as free comes first among equals)
                    value = loss / max(cost, 0.01) if cost is not None else loss
                    rank = (value, loss, only.measured["mean_rel_err"])
                    ranked.append((*rank, layer))
                    if kept_float is not None and (first is None or rank > first[0]):  # strictly: the earlier layer wins a tie, as in the sort below
                        first = (rank, layer, kept_float)
                    del only, kept_float
                    note({"technique": "sensitivity", "graph": tag, "method": how, "layer": layer, "loss_points": 100 * loss,
                          "mean_rel_err": rank[2], "float_cost_ms": cost, "points_per_ms": None if cost is None else 100 * value,
                          "seconds": round(time.perf_counter() - started, 2)})
            order = [layer for _, _, _, layer in sorted(ranked, key=lambda item: (-item[0], -item[1], -item[2]))]
            for count in range(1, len(order)):  # all of them in float would be an FP32 model called INT8
                kept = order[:count]
                made = first[2] if count == 1 and first is not None and first[1] == kept[0] else None
                first = None  # held only until it is measured
                candidate = attempt(tag, how, exclude=kept, float_layers=kept, technique="fallback to float", quantized=made)
                if budget.holds(candidate.measured):
                    return finish(candidate, True)
            return finish(best, False)
        except KeyboardInterrupt as exc:
            # What the search would return travels with the interrupt: the first candidate within the budget
            # (measured, maybe not yet returned), else the best so far, not within it (met False).
            kept = finish(chosen, True) if chosen is not None else (finish(best, False) if best is not None else None)
            raise SearchInterrupted(kept, log) from exc


def _calibration_sample(images, count: int = EQUALIZE_CHECK_IMAGES) -> np.ndarray:
    """Up to ``count`` preprocessed calibration images (for bias correction's input means)."""
    rows = []
    for group in images.batches(count, ahead=0):  # one batch is all it takes: decode nothing more
        rows += [array for _, array in group]
        break
    return np.stack(rows)


def log_lines(log: list[dict[str, Any]]) -> list[str]:
    """One line per step of the INT8 search: what was tried and what it measured."""
    lines = []
    for entry in log:
        head = f"{entry['step']:>2}. {entry['technique']}"
        if entry["technique"].startswith("cross-layer equalization (FP32"):
            if not entry["pairs"]:
                lines.append(f"{head}: no Conv/Gemm pair joined only by ReLU/MaxPool/Flatten (LRN or other ops between): skipped")
            else:
                lines.append(f"{head}: {len(entry['pairs'])} pair(s), FP32 max rel diff {entry['fp32_max_rel_diff']:.1e} on {entry['images']} images"
                             + ("" if entry["within_tolerance"] else " (over tolerance: not used)"))
        elif entry["technique"] == "sensitivity":
            cost = "" if entry.get("float_cost_ms") is None else f"; in float {entry['float_cost_ms']:+.2f} ms a batch ({entry['points_per_ms']:.2f} points/ms)"
            lines.append(f"{head} {entry['layer']}: loses {entry['loss_points']:.1f} points alone (mean rel err {entry['mean_rel_err']:.3f}){cost}")
        else:
            if entry.get("accuracy") is not None:
                what = f"accuracy {entry['accuracy']:.1%} ({signed(-entry['drop_points'])} points)"
            else:
                what = f"agreement {entry['top1_agreement']:.1%}"
            extra = f", float: {','.join(entry['float_layers'])}" if entry["float_layers"] else ""
            lines.append(f"{head} ({entry['graph']}, {entry['method']}{extra}): {what}" + (" ✓" if entry["within_budget"] else ""))
    return lines
