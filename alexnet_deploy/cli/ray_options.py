"""``--ray [ADDRESS]`` and its companions (--actors, --batch, --output, --format), shared by predict and eval."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

RAY_PANEL = "Ray (batch inference beyond one machine)"

RayOpt = Annotated[Optional[str], typer.Option(
    "--ray", metavar="[ADDRESS]", rich_help_panel=RAY_PANEL,
    help="Run on Ray Data: bare --ray starts a local instance (or uses RAY_ADDRESS); --ray auto joins a `ray start` cluster; --ray ray://HOST:10001 uses Ray Client.",
)]
ActorsOpt = Annotated[Optional[int], typer.Option("--actors", rich_help_panel=RAY_PANEL, help="Classifier actors (default: the cluster's CPUs minus one, left for decoding).")]
RayBatchOpt = Annotated[Optional[int], typer.Option("--batch", help="Images per model call (with --ray: in each actor) (default 32).")]
RayOutputOpt = Annotated[Optional[str], typer.Option(
    "--output", "-o", metavar="FILE|DIR",
    help="Write rows (path, labels, probabilities, error) to FILE.parquet / FILE.jsonl instead of printing them (Parquet needs pyarrow); with --ray also a folder of part files written by the workers (a cluster's shared storage, e.g. s3://...), staged beside it and moved into place when complete.",
)]
RayFormatOpt = Annotated[Optional[str], typer.Option("--format", metavar="parquet|jsonl", rich_help_panel=RAY_PANEL, help="Format of an --output folder (default parquet; a file's comes from its suffix).")]


def run_predict_ray(model_file: Path, images, topk, report, threads, address, actors, batch, output, output_format) -> None:
    """``alexnet predict --ray``: print or write the rows, then the summary; skipped images on stderr."""
    from alexnet_deploy.cli.app import err, out
    from alexnet_deploy.deploy.ray_batch import predict_ray

    def log(message: str) -> None:
        if not report.quiet or err.is_terminal:
            err.print(f"{message} …", markup=False)

    def show(item) -> None:
        if not report.quiet:
            best = ", ".join(f"{escape(label)} {p:.1%}" for label, p in item["top"])
            out.print(f"{escape(item['image'])}: {best}")

    tick = time.perf_counter()
    result = predict_ray(
        model_file, images, output=output, fmt=output_format, address=address, actors=actors, batch=batch,
        topk=5 if topk is None else topk, threads=threads, show_progress=err.is_terminal, log=log, on_prediction=show,
    )
    data = result.to_dict()
    data["wall_s"] = time.perf_counter() - tick
    report.emit(data)
    for skipped in result.skipped:
        err.print(f"skipped {skipped['image']}: {skipped['reason']}", markup=False)
    if not report.quiet:
        where = f" -> {escape(str(output))} ({result.format})" if output is not None else ""
        out.print(
            f"[green]labelled[/green] {result.images} images on Ray ({result.address}, {result.actors} actor(s), batch {result.batch}){where}: "
            f"{result.images_per_s:.1f} images/s, Ray start {result.ray_start_s:.1f} s, {len(result.skipped)} skipped"
        )


def run_eval_ray(model_file: Path, data: Path, runtime, batch, limit, threads, address, actors, report, checkpoint_flags: bool, follow_links: bool = False):
    """``alexnet eval --ray``: ONNX models only (checkpoint flags refused), the local eval's report."""
    from alexnet_deploy.cli.app import err
    from alexnet_deploy.deploy.ray_batch import eval_ray
    from alexnet_deploy.errors import InputError

    if runtime not in (None, "ort") or checkpoint_flags:
        raise InputError("eval --ray runs ONNX models on onnxruntime; --runtime torch and the checkpoint flags do not apply.", "export the checkpoint first (alexnet export), or drop --ray")

    def log(message: str) -> None:
        err.print(f"{message} …", markup=False)

    return eval_ray(model_file, data, address=address, actors=actors, batch=batch, limit=limit, threads=threads, show_progress=err.is_terminal, log=log,
                    follow_links=follow_links)
