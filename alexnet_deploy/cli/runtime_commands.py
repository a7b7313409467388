"""Commands about running models fast: build (TensorRT engines) and bench."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from alexnet_deploy.checkpoints.options import ModelOptions
from alexnet_deploy.cli.app import JsonTarget, command, err, out, progress_steps
from alexnet_deploy.cli.options import IoMode, JsonOpt, ThreadsOpt, flag, value, with_model_options
from alexnet_deploy.errors import CheckFailed, InputError


@command()
def build(
    model_file: Annotated[Path, typer.Argument(metavar="MODEL.onnx", help="A verified ONNX model: FP32 from export, FP16 or INT8 (--target tensorrt) from quantize.")],
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="Engine path (default: MODEL.engine), written with a MODEL.engine.json sidecar.")] = None,
    min_batch: Annotated[Optional[int], typer.Option("--min-batch", help="Smallest batch the engine accepts (default 1).")] = None,
    opt_batch: Annotated[Optional[int], typer.Option("--opt-batch", help="Batch the kernels are tuned for (default 32).")] = None,
    max_batch: Annotated[Optional[int], typer.Option("--max-batch", help="Largest batch the engine accepts (default 128).")] = None,
    timing_cache: Annotated[Optional[Path], typer.Option("--timing-cache", help="Reuse and update this TensorRT timing cache (faster rebuilds).")] = None,
    workspace_mb: Annotated[Optional[int], typer.Option("--workspace-mb", help="Builder workspace limit in MiB (default: TensorRT's).")] = None,
    check_only: Annotated[bool, flag("--check-only", help="Only lint the ONNX for TensorRT (runs anywhere, no GPU); exit 1 on problems.")] = False,
    json_target: JsonOpt = None,
):
    """Compile an ONNX model into a TensorRT engine (TensorRT 10 or 11, strongly typed: precision comes from the ONNX).

    First lints the ONNX for TensorRT's parser on the CPU: supported ops (LRN window odd
    1..15), Q/DQ zero points 0, no UINT8 Q/DQ, no INT32 DequantizeLinear, only the batch
    dimension dynamic, opset 9..24. A problem names the node and the rule and exits 1.
    An engine runs only with the exact TensorRT version that built it, on the same GPU kind.
    """
    from alexnet_deploy.build.engine import BatchProfile, build_engine

    defaults = BatchProfile()
    profile = BatchProfile(min_batch or defaults.min, opt_batch or defaults.opt, max_batch or defaults.max)
    report = JsonTarget(json_target)
    with progress_steps(report.quiet) as progress:
        try:
            result = build_engine(model_file, output, profile, timing_cache, workspace_mb, check_only, progress)
        except CheckFailed:
            if check_only:
                # the findings are the report: --json gets them too, then the check fails (exit 1)
                findings = _print_lint(model_file)
                report.emit({"onnx": str(model_file), "lint": [f.to_dict() for f in findings], "engine": None, "passed": False})
            raise
    report.emit({**result.to_dict(), "passed": True})
    if report.quiet:
        return
    if check_only:
        out.print(f"[green]PASS[/green]  {escape(str(model_file))}: no TensorRT compatibility problems found")
        return
    sidecar = result.sidecar
    profile_used = sidecar.profile
    out.print(f"[green]built[/green] {escape(str(result.engine))} in {result.seconds:.0f} s ({sidecar.precision}, batch {profile_used['min']}..{profile_used['max']} tuned for {profile_used['opt']}, TensorRT {sidecar.tensorrt_version}, {escape(sidecar.gpu_name)})")


def _print_lint(model_file: Path) -> list:
    """Every lint finding, one per line, on stderr (the error line names only the first); returns them."""
    from alexnet_deploy.build.lint import lint_onnx
    from alexnet_deploy.onnx_file import load_onnx

    findings = lint_onnx(load_onnx(model_file))
    for finding in findings:
        err.print(f"  {finding}", markup=False)
    return findings


@command()
@with_model_options
def bench(
    inputs: Annotated[Optional[list[Path]], typer.Argument(metavar="INPUT...", help="Checkpoints (torch runtimes), ONNX files of any precision, TensorRT engines.")] = None,
    runtime: Annotated[Optional[str], typer.Option("--runtime", metavar="NAME,...", help="Comma list of: torch, torch-compile, torch-cuda, torch-cuda-fp16, ort, ort-cuda, ort-trt, openvino, openvino-bf16 (the FP32 file in BF16, CPUs with native BF16), trt (default torch,ort).")] = None,
    batch: Annotated[Optional[str], typer.Option("--batch", metavar="N,...", help="Batch sizes, comma separated (default 1,8,32; the suite: 1,32).")] = None,
    threads: ThreadsOpt = None,
    warmup: Annotated[Optional[float], typer.Option("--warmup", help="Warm-up seconds per combination, not measured (default 1).")] = None,
    duration: Annotated[Optional[float], typer.Option("--duration", help="Measured seconds per combination (default 3).")] = None,
    iterations: Annotated[Optional[int], typer.Option("--iterations", help="Measure exactly this many runs instead of --duration.")] = None,
    rounds: Annotated[Optional[int], typer.Option("--rounds", help="Split each row's budget into N rounds measured round-robin over all rows, so load changes on a shared machine hit every row alike (default 1, the suite 3; all models stay loaded).")] = None,
    io: Annotated[Optional[IoMode], typer.Option("--io", help="host (default): numpy in, logits back (end to end). device: inputs already on the GPU, model time only.")] = None,
    json_target: JsonOpt = None,
    csv_file: Annotated[Optional[Path], typer.Option("--csv", metavar="FILE.csv", help="Write the results as CSV.")] = None,
    plot: Annotated[Optional[Path], typer.Option("--plot", metavar="FILE.png", help="Draw throughput as a PNG bar chart.")] = None,
    model_options: ModelOptions = None,
    suite: Annotated[bool, flag("--suite", help="Run the standard suite (torch, torch.compile, onnxruntime and OpenVINO FP32/FP16/INT8, OpenVINO BF16 where the CPU has it, plus CUDA/TensorRT where present) and update BENCHMARKS.md.")] = False,
    suite_dir: Annotated[Optional[Path], typer.Option("--suite-dir", help="Where the suite keeps its generated models (default bench-work).")] = None,
    write: Annotated[Optional[Path], typer.Option("--write", help="The Markdown file --suite (default BENCHMARKS.md) or --e2e updates with its section.")] = None,
    e2e: Annotated[Optional[Path], typer.Option("--e2e", metavar="IMAGES/", help="Measure from image files: decode + preprocess alone, the model alone, and both together (as predict runs), naming the bottleneck. ONNX inputs on ort/openvino; default runtime ort, batch 32.", rich_help_panel="End to end")] = None,
    workers: Annotated[Optional[int], typer.Option("--workers", help="--e2e: decode threads (default: one per CPU).", rich_help_panel="End to end")] = None,
):
    """Latency (mean/p50/p90/p99/min/max) and throughput of every runtime x model x batch, in one table.

    Warm-up is excluded; GPU work is timed to completion. Speedup is against the first row
    with the same batch size. Runtimes that cannot run here are listed with the reason.
    The report names the CPU's ISA features and its measured GEMM ceilings; CPU rows give
    achieved GFLOP/s and the share of their precision's ceiling; the last lines name the
    fastest runtime x precision per batch and its speedup over onnxruntime FP32.
    """
    from alexnet_deploy.bench import report as bench_report
    from alexnet_deploy.bench.harness import TimingSettings
    from alexnet_deploy.bench.runner import RUNTIMES, parse_batches, run_bench
    from alexnet_deploy.parsing import parse_names
    from alexnet_deploy.fileio import atomic_write_bytes, check_writable

    if e2e is not None:
        return _bench_e2e(inputs, e2e, runtime, batch, threads, workers, duration, json_target, write, suite, csv_file, plot)
    if workers is not None:
        raise InputError("--workers applies to --e2e.", "add --e2e IMAGES/ or drop --workers")
    runtimes = parse_names(runtime or "torch,ort", "--runtime", RUNTIMES)
    report_target = JsonTarget(json_target)
    for target, what, suffix in ((csv_file, "CSV", ".csv"), (plot, "plot", ".png")):
        if target is not None:
            if target.suffix.lower() != suffix:
                raise InputError(f"{target} does not end in {suffix}.", f"name it *{suffix}")
            check_writable(target, what)
    settings = TimingSettings(
        warmup_s=1.0 if warmup is None else warmup, duration_s=3.0 if duration is None else duration,
        iterations=iterations, io=value(io) or "host",
        rounds=(3 if suite else 1) if rounds is None else rounds,  # the suite compares many rows: round-robin by default
    )
    if not suite and not inputs:
        raise InputError("bench needs at least one INPUT (checkpoint, ONNX or engine), or --suite.", "e.g. alexnet bench alexnet.pth alexnet.onnx --runtime torch,ort")
    if not suite and (suite_dir is not None or write is not None):
        raise InputError("--suite-dir and --write apply to --suite (and --write to --e2e).", "add --suite, or drop them")
    if suite:
        if inputs or runtime is not None or model_options.arch or model_options.model:
            raise InputError("--suite picks its own models and runtimes; INPUT, --runtime, --arch and --model do not apply.", "run `alexnet bench --suite` alone (timing options are fine)")
        write = write or Path("BENCHMARKS.md")
        check_writable(write, "benchmark report")
    with progress_steps(report_target.quiet) as progress:
        if suite:
            from alexnet_deploy.bench.suite import run_suite, write_suite

            batches = parse_batches(batch) if batch is not None else (1, 32)
            report = run_suite(suite_dir or Path("bench-work"), settings, threads, batches=batches, progress=progress)
            write_suite(report, write)
        else:
            report = run_bench(inputs, runtimes, parse_batches(batch or "1,8,32"), settings, threads, model_options, progress)
    data = report.to_dict()
    if csv_file is not None:
        atomic_write_bytes(csv_file, bench_report.to_csv(data).encode())
    if plot is not None:
        bench_report.plot_png(data, plot)
    from alexnet_deploy.cli.render import bench_table

    report_target.emit(data, bench_table(data, out.width))
    if report_target.quiet:
        return
    for skip in report.skipped:
        err.print(f"skipped {skip['runtime']} {Path(skip['model']).name}: {skip['reason']}", markup=False)
    for line in trust_warnings(data):
        err.print(line, markup=False)
    from alexnet_deploy.bench.report import ceilings_line
    from alexnet_deploy.bench.runner import fastest_lines

    out.print(ceilings_line(report.machine), markup=False)
    for line in fastest_lines(report.fastest):
        out.print(line, markup=False)
    harness = report.harness
    if harness.get("overhead_pct_of_fastest_p50") is not None:
        out.print(f"harness overhead {1000 * harness['overhead_ms_per_iteration']:.1f} µs per iteration ({harness['overhead_pct_of_fastest_p50']:.3f}% of the fastest p50)")


def _bench_e2e(inputs, folder, runtime, batch, threads, workers, duration, json_target, write, suite, csv_file, plot) -> None:
    """``bench MODEL.onnx... --e2e IMAGES/``: decode, model and end to end per runtime, the bottleneck named."""
    from alexnet_deploy.bench.e2e import E2E_RUNTIMES, decode_lines, e2e_markdown, e2e_section, run_e2e
    from alexnet_deploy.bench.report import ceilings_line, write_section
    from alexnet_deploy.fileio import check_writable
    from alexnet_deploy.parsing import parse_names

    if suite or csv_file is not None or plot is not None:
        raise InputError("--e2e is its own measurement; --suite, --csv and --plot do not apply.", "run it alone: alexnet bench MODEL.onnx --e2e IMAGES/")
    if not inputs:
        raise InputError("--e2e needs at least one ONNX model.", "e.g. alexnet bench model.int8.onnx --e2e images/ --runtime openvino")
    batches = [32] if batch is None else [int(b) for b in batch.split(",") if b.strip()]
    if len(batches) != 1 or batches[0] < 1:
        raise InputError(f"--e2e takes one batch size, got --batch {batch}.", "e.g. --batch 32")
    if write is not None:
        check_writable(write, "benchmark report")
    report_target = JsonTarget(json_target)
    with progress_steps(report_target.quiet) as progress:
        report = run_e2e(inputs, folder, parse_names(runtime or "ort", "--runtime", E2E_RUNTIMES), batches[0], workers,
                         3.0 if duration is None else duration, threads, progress)
    data = report.to_dict()
    if write is not None:
        write_section(write, e2e_section(data))
    from rich.markdown import Markdown
    from rich.text import Text

    text = "\n".join(decode_lines(data)) + "\n\n" + e2e_markdown(data)
    report_target.emit(data, Markdown(text) if out.is_terminal else Text(text))
    if report_target.quiet:
        return
    for skip in report.skipped:
        err.print(f"skipped {skip['runtime']} {Path(skip['model']).name}: {skip['reason']}", markup=False)
    for row in report.rows:
        out.print(f"{row['runtime']} {Path(row['model']).name}: end to end {row['e2e_ips']:.1f} img/s = {100 * row['e2e_share_of_model']:.0f}% of the model alone "
                  f"({row['model_ips']:.1f}); bottleneck: {row['bottleneck']}", markup=False)
    out.print(ceilings_line(report.machine), markup=False)


def trust_warnings(data: dict) -> list[str]:
    """Warning lines when the host was busy before the run, or rows are flagged (busy, noisy, over the ceiling)."""
    from alexnet_deploy.bench.load import BUSY_SHARE

    lines = []
    before = data["machine"].get("load_before") or {}
    if (before.get("other_cpu_share") or 0) > BUSY_SHARE:
        lines.append(f"warning: before the run other processes used {100 * before['other_cpu_share']:.0f}% of the CPU "
                     f"(load average {before['loadavg_1m']:.1f} on {before['cores']} cores): figures from a busy host are not comparable")
    flagged = [r for r in data["results"] if r.get("flags")]
    if flagged:
        lines.append(f"warning: {len(flagged)} of {len(data['results'])} row(s) not to be trusted (the trust column; 'flags' in --json): "
                     + "; ".join(f"{r['runtime']} {Path(r['model']).name} batch {r['batch']}: {', '.join(r['flags'])}" for r in flagged[:3]))
    return lines
