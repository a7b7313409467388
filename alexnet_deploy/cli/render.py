"""Human-readable renderings of the library's reports (the CLI prints these; JSON is separate)."""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from rich.table import Table


def _mb(n: int) -> str:
    """A file size in MB, or kB for small files (a tiny test model is not "0.0 MB")."""
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n / 1e3:.1f} kB"


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def verification_line(report: dict[str, Any]) -> str:
    """One line: verdict and the figures behind it."""
    verdict = "[green]PASS[/green]" if report["passed"] else "[red]FAIL[/red]"
    limits = report["thresholds"]

    def limit(key: str, text: str) -> str:
        return f" ({text})" if key in limits else ""

    line = (
        f"{verdict}  {report.get('precision', 'fp32')}: max abs err {report['max_abs_err']:.3g}, max rel err {report['max_rel_err']:.3g}"
        + limit("max_rel_err", f"<={limits.get('max_rel_err', 0):g}")
        + f", min cosine {report['min_cosine']:.7f}" + limit("min_cosine", f">={limits.get('min_cosine')}")
        + f", top-1 {_pct(report['top1_agreement'])}" + limit("min_top1_agreement", f">={_pct(limits.get('min_top1_agreement', 0))}")
        + f", top-5 {_pct(report['top5_agreement'])}; {report['samples']} samples at batch {','.join(map(str, report['batch_sizes']))}"
    )
    if report.get("first_divergent_layer"):
        line += f"\n  first divergent layer: [bold]{report['first_divergent_layer']}[/bold]"
    return line


def _lrn_text(sites: list[dict]) -> str:
    if not sites:
        return "none executed by forward"
    parts = []
    for site in sites:
        onnx = site.get("onnx_lrn")
        if onnx:
            parts.append(f"{escape(site['name'])} ({site['kind']}) -> LRN size={onnx['size']} alpha={onnx['alpha']:g} beta={onnx['beta']:g} bias={onnx['bias']:g}")
        else:
            parts.append(escape(f"{site['name']} ({site['kind']}): {site.get('note') or 'exported as traced ops'}"))
    return "\n".join(parts)


def _first_labels(labels, shown: int = 5) -> str:
    """The first labels, and how many more there are (never a silent cut); --json has them all."""
    more = f" and {len(labels) - shown} more" if len(labels) > shown else ""
    return escape(", ".join(labels[:shown])) + more


def _two_columns() -> Table:
    """A borderless name/value table."""
    table = Table(show_header=False, box=None, padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")  # a narrow terminal wraps long values; it never cuts them with "…"
    return table


def _notes(table: Table, notes: list[str]) -> None:
    for note in notes:
        table.add_row("[yellow]note[/yellow]", escape(note))


def _histogram(histogram: dict[str, int]) -> str:
    return ", ".join(f"{op} {n}" for op, n in sorted(histogram.items(), key=lambda kv: (-kv[1], kv[0])))


def export_table(data: dict[str, Any]) -> Table:
    """The export summary as a two-column table."""
    table = _two_columns()
    table.add_row("output", f"{escape(data['output'])} ({_mb(data['bytes'])})")
    table.add_row("layout", f"{data['layout']}, {data['num_classes']} classes, input 3x{data['input_size']}x{data['input_size']}, batch {data['batch']}")
    ckpt = data["checkpoint"]
    table.add_row("checkpoint", f"{escape(ckpt['path'])} ({escape(ckpt['format'])})\nsha256 {ckpt['sha256']}")
    table.add_row("LRN", f"{data['lrn_nodes']} ONNX LRN node(s)\n{_lrn_text(data['lrn_sites'])}")
    table.add_row("graph", f"opset {data['opset']}, {data['nodes']} nodes: {_histogram(data['op_histogram'])}")
    labels = data["labels"]
    table.add_row("labels", f"{len(labels)}: {_first_labels(labels)}")
    table.add_row("preprocessing", data["preprocessing"])
    if data.get("verification"):
        table.add_row("parity", verification_line(data["verification"]))
    else:
        table.add_row("parity", "[yellow]not checked (--no-verify)[/yellow]")
    _notes(table, data.get("warnings", []))
    return table


def verify_table(data: dict[str, Any]) -> Table:
    """A verify report as a table."""
    table = _two_columns()
    table.add_row("result", verification_line(data))
    worst = data["worst_sample"]
    table.add_row("worst sample", f"{escape(worst['source'])} at batch {worst['batch_size']}: rel err {worst['rel_err']:.3g}, cosine {worst['cosine']:.7f}")
    table.add_row("inputs", f"{data['samples'] - data['images']} random + {data['images']} images" + (f" ({len(data['skipped_images'])} undecodable skipped)" if data["skipped_images"] else ""))
    _notes(table, data.get("notes", []))
    return table


def inspect_table(data: dict[str, Any]) -> Table:
    """An inspect report (checkpoint or ONNX) as a table."""
    table = _two_columns()
    table.add_row("file", f"{escape(data['path'])} ({_mb(data['file_bytes'])}, {data['kind']})")
    if data["kind"] == "checkpoint":
        table.add_row("format", escape(data["format"]) + (f", prefixes stripped: {' '.join(data['stripped_prefixes'])}" if data["stripped_prefixes"] else ""))
        if data["layout"]:
            table.add_row("layout", f"{data['layout']}" + (f": {data['layout_summary']} ({data['source']})" if data.get("layout_summary") else ""))
        else:
            table.add_row("layout", f"[yellow]{escape(data['layout_problem'])}[/yellow]\n{escape(data.get('layout_fix') or '')}")
        if data.get("num_classes"):
            table.add_row("classes", str(data["num_classes"]) + (f": {_first_labels(data['labels'])}" if data.get("labels") else ""))
            table.add_row("input", f"3x{data['input_size']}x{data['input_size']}")
            table.add_row("preprocessing", data["preprocessing"])
        table.add_row("parameters", f"{data['parameters']:,} in {data['tensors']} tensors ({', '.join(data['dtypes'])})")
        if "lrn" in data and data["lrn"] is not None:
            table.add_row("LRN", _lrn_text(data["lrn"]))
        if data["info"]:
            table.add_row("also saved", escape(", ".join(f"{k}={v}" for k, v in data["info"].items())))
        table.add_row("sha256", data["sha256"])
    else:
        if data["layout"]:
            table.add_row("layout", f"{data['layout']}, {data['num_classes']} classes, precision {data['precision']}")
            labels = data["labels"]
            table.add_row("labels", _first_labels(labels))
            table.add_row("preprocessing", data["preprocessing"])
            table.add_row("source", f"checkpoint sha256 {data['source_sha256']}\nalexnet-deploy {data['toolkit_version']}")
            quant = (data.get("details") or {}).get("quantization")
            if quant:
                calib = quant.get("calibration")
                made = f"{quant['recipe']} (target {quant['target']})"
                if calib:
                    made += f"; calibrated ({calib['method']}) on {calib['images']} {calib['source']} images"
                table.add_row("quantization", escape(made))
        else:
            table.add_row("metadata", "[yellow]no alexnet-deploy record (labels, preprocessing)[/yellow]")
        for kind in ("inputs", "outputs"):
            table.add_row(kind, escape("; ".join(f"{t['name']} {t['dtype']} {t['shape']}" for t in data[kind])))
        table.add_row("graph", f"opset {data['opset']}, IR {data['ir_version']}, {data['nodes']} nodes: {_histogram(data['op_histogram'])}")
        lrn = data["lrn_nodes"]
        table.add_row("LRN", "; ".join(f"{n['name']} size={n.get('size')} alpha={n.get('alpha', 1e-4):g} beta={n.get('beta', 0.75):g} bias={n.get('bias', 1.0):g}" for n in lrn) or "none")
        constants = data.get("constants") or {}
        extra = f" (weights; plus {constants['values']:,} value(s) in {constants['tensors']} shape/quantization constant(s))" if constants.get("tensors") else ""
        table.add_row("parameters", f"{data['parameters']:,}{extra}")
    return table


def change_text(change: dict[str, Any]) -> str:
    """'-0.4 points (95% CI -1.2..+0.4; 3 images lost, 1 gained, McNemar p 0.62)': the sign says which way top-1 moved."""
    from alexnet_deploy.verify.paired import signed

    low, high = change["ci_points"]
    return (f"{signed(-change['drop_points'])} points ({100 * change['confidence']:.0f}% CI {signed(-high)}..{signed(-low)}; "
            f"{change['broken']} images lost, {change['fixed']} gained, McNemar p {change['mcnemar_p']:.2g})")


def quantize_table(data: dict[str, Any]) -> Table:
    """The quantize summary: output, recipe, calibration, comparison with FP32, sizes, latency."""
    table = _two_columns()
    sizes = data["sizes"]
    written = data.get("written", True)
    status = "" if written else "[red]not written[/red]: "
    table.add_row("output", f"{status}{escape(data['output'])} ({_mb(sizes['bytes'])}, {_pct(sizes['ratio'])} of FP32 {_mb(sizes['fp32_bytes'])})")
    table.add_row("recipe", f"{data['recipe']} (target {data['target']})")
    calib = data.get("calibration")
    if calib:
        skipped = f", {calib['skipped']} undecodable skipped" if calib["skipped"] else ""
        table.add_row("calibration", f"{calib['method']} on {calib['images']} {calib['source']} images{skipped}")
    cmp = data["comparison"]
    line = f"top-1 agreement {_pct(cmp['top1_agreement'])}, top-5 {_pct(cmp['top5_agreement'])}, min cosine {cmp['min_cosine']:.5f} on {escape(cmp['on'])}"
    if cmp.get("accuracy") is not None:
        line += f"\naccuracy {_pct(cmp['accuracy'])} (FP32 {_pct(cmp['accuracy_fp32'])}): {change_text(cmp['accuracy_change'])}"
        if cmp.get("budget_verdict"):
            line += f"; budget: {cmp['budget_verdict']}"
    flips = cmp.get("flip_rate")
    if flips:
        line += f"\ntop-1 changed on {flips['count']} of {flips['n']} images ({_pct(flips['rate'])}, 95% CI {_pct(flips['ci'][0])}..{_pct(flips['ci'][1])})"
        if cmp.get("changed_images"):
            first = cmp["changed_images"][0]
            line += f", e.g. {escape(first['image'])}: {escape(first['reference'])} -> {escape(first['candidate'])} (all in --json: changed_images)"
    table.add_row("vs FP32", line)
    for key, row in data.get("latency", {}).items():
        table.add_row(f"latency {key.replace('_', ' ')}", f"{row['ms']:.2f} ms vs FP32 {row['fp32_ms']:.2f} ms: {row['speedup']:.2f}x (median, onnxruntime CPU)")
    search = data.get("search")
    if search:
        recipe = search["recipe"]
        verdict = "[green]met[/green]" if search["met"] else "[red]missed[/red]"
        table.add_row("budget", f"{escape(search['budget']['text'])}: {verdict}")
        chosen = f"{recipe['method']} calibration on the {recipe['graph']} graph"
        if recipe["equalized_layers"]:
            chosen += f"; equalized {len(recipe['equalized_layers'])} layer pair(s)"
        if recipe["bias_corrected_layers"]:
            chosen += f"; bias corrected {len(recipe['bias_corrected_layers'])} layer(s)"
        if recipe["float_layers"]:
            chosen += f"; kept in float: {', '.join(recipe['float_layers'])}"
        table.add_row("chosen" if search["met"] else "best tried", escape(chosen))
        from alexnet_deploy.quantize.search import log_lines

        table.add_row("search log", escape("\n".join(log_lines(search["log"]))))
    for warning in data.get("warnings", []):
        table.add_row("[yellow]warning[/yellow]", escape(warning))
    return table


def confusion_table(report) -> Table:
    """The confusion matrix as a table (rows: true class, columns: predicted)."""
    present = report.present_classes()
    table = Table(title="confusion (rows: true, columns: predicted)", box=None, padding=(0, 1))
    table.add_column("")
    for i in present:
        table.add_column(escape(report.labels[i][:10]), justify="right")
    for r in present:
        cells = [f"[bold]{v}[/bold]" if c == r else (str(v) if v else "[dim]·[/dim]") for c, v in ((c, report.confusion[r][c]) for c in present)]
        table.add_row(escape(report.labels[r]), *cells)
    return table


def eval_table(report, confusion_png=None):
    """An eval report: headline figures, per-class accuracy, and the confusion matrix (or its worst cells)."""
    from rich.console import Group

    table = _two_columns()
    table.add_row("model", f"{escape(report.model)} ({report.runtime}, {report.precision})")
    table.add_row("accuracy", f"top-1 {_pct(report.top1)}, top-5 {_pct(report.top5)} on {report.n} images")
    in_model = "" if report.model_images_per_s is None else f", {report.model_images_per_s:.1f} images/s in the model"
    table.add_row("throughput", f"{report.images_per_s:.1f} images/s end to end{in_model} (batch {report.batch})")
    worst = sorted(report.per_class.items(), key=lambda kv: kv[1]["top1"])
    shown = worst if len(worst) <= 10 else worst[:10]
    title = "per class" if len(worst) <= 10 else "worst 10 classes"
    table.add_row(title, "\n".join(f"{escape(name)}: {_pct(v['top1'])} of {v['n']}" for name, v in shown))
    if report.skipped:
        table.add_row("skipped", f"{len(report.skipped)} undecodable or oversized file(s), e.g. {escape(report.skipped[0])}")
    if report.excluded:
        first = report.excluded[0]
        table.add_row("left out", f"{len(report.excluded)} folder entr{'y' if len(report.excluded) == 1 else 'ies'}, e.g. {escape(first['path'])}: {escape(first['reason'])}")
    if confusion_png is not None:
        table.add_row("confusion PNG", escape(str(confusion_png)))
    _notes(table, report.notes)
    if len(report.present_classes()) <= 20:
        return Group(table, "", confusion_table(report))
    mistakes = report.top_confusions(10)
    table.add_row("top confusions", "\n".join(f"{escape(t)} -> {escape(p)}: {n}" for t, p, n in mistakes) or "none")
    return table


BENCH_COLUMNS = (("runtime", "left"), ("model", "left"), ("precision", "left"), ("batch", "right"), ("mean ms", "right"), ("p50", "right"), ("p90", "right"), ("p99", "right"), ("min", "right"), ("max", "right"), ("images/s", "right"), ("speedup", "right"), ("GFLOP/s", "right"), ("% ceiling", "right"), ("trust", "left"))


def _bench_cells(data: dict[str, Any]) -> list[list[str]]:
    from pathlib import Path

    from alexnet_deploy.bench.load import short_flags

    rows = []
    for row in data["results"]:
        lat = row["latency_ms"]
        rows.append([
            row["runtime"], Path(row["model"]).name, row["precision"], str(row["batch"]),
            *(f"{lat[k]:.2f}" for k in ("mean", "p50", "p90", "p99", "min", "max")), f"{row['throughput_ips']:.1f}", f"{row['speedup']:.2f}x",
            f"{row['gflops']:.0f}" if "gflops" in row else "-", f"{row['ceiling_pct']:.0f}%" if "ceiling_pct" in row else "-", short_flags(row),
        ])
    return rows


def fitting_table(columns, cells: list[list[str]], width: int | None, title: str | None = None):
    """A table of ``cells`` under ``columns`` ((name, justify) pairs); when it is wider than ``width``
    (a narrow terminal) each row becomes a block of ``name: value`` lines instead, so no value is cut."""
    needed = sum(max([len(name)] + [len(row[i]) for row in cells]) + 1 for i, (name, _) in enumerate(columns))
    if width is not None and needed > width:
        from rich.text import Text

        label = max(len(name) for name, _ in columns)
        lines = [title] if title else []
        for row in cells:
            lines.append("")
            lines.extend(f"  {name:>{label}}: {cell}" for (name, _), cell in zip(columns, row))
        return Text("\n".join(lines))
    table = Table(box=None, padding=(0, 1), title=escape(title) if title else None)
    for name, justify in columns:
        table.add_column(name, justify=justify, no_wrap=True)
    for row in cells:
        table.add_row(*(escape(cell) for cell in row))
    return table


def bench_table(data: dict[str, Any], width: int | None = None):
    """Bench results: one row per runtime x model x batch (blocks of lines on a narrow terminal, see fitting_table)."""
    machine = data["machine"]
    title = f"{machine['cpu']}, {machine['cores']} cores" + (f", {machine['gpu']}" if machine.get("gpu") else "")
    if machine.get("isa_line"):
        title += f"; {machine['isa_line']}"
    return fitting_table(BENCH_COLUMNS, _bench_cells(data), width, title)


def optimize_view(report: dict[str, Any], width: int | None = None):
    """optimize's report for a terminal: the same content as report.md, as text that wraps and a
    table that never cuts a value (blocks of lines when the terminal is too narrow)."""
    from rich.console import Group
    from rich.text import Text

    from alexnet_deploy.optimize import report_heading, report_sections, report_table

    title, intro = report_heading(report)
    parts = [Text(title, style="bold"), Text(intro), Text(""), fitting_table(*report_table(report), width)]
    for heading, body, verbatim in report_sections(report):
        parts += [Text(""), Text(heading, style="bold")]
        parts += [Text(line if verbatim else f"  - {line}") for line in body]
    return Group(*parts)
