"""Commands that put a model to work: predict, package (Triton), serve (KServe v2 / Triton HTTP)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from alexnet_deploy.cli.app import JsonTarget, command, err, out
from alexnet_deploy.cli.options import JsonOpt, OnnxRuntime, ThreadsOpt, TritonBackend, flag, value


@command()
def predict(
    model_file: Annotated[Path, typer.Argument(metavar="MODEL.onnx", help="An exported ONNX model (FP32, FP16 or INT8).")],
    images: Annotated[list[Path], typer.Argument(metavar="IMAGE...", help="Image files, or folders of them.")],
    topk: Annotated[Optional[int], typer.Option("--topk", help="How many classes to show per image (default 5).")] = None,
    json_target: JsonOpt = None,
    threads: ThreadsOpt = None,
    runtime: Annotated[Optional[OnnxRuntime], typer.Option("--runtime", help="ort (default), openvino (the file's precision), openvino-bf16 (an FP32 file in BF16, CPUs with native BF16; pip install 'alexnet-deploy[openvino]').")] = None,
):
    """Label images: the top classes and their probabilities, with labels and preprocessing from the model file.

    Undecodable files are skipped and listed; no decodable image at all is an error.
    """
    from alexnet_deploy.predict import predict_files

    report = JsonTarget(json_target)
    result = predict_files(model_file, images, topk=5 if topk is None else topk, threads=threads, runtime=value(runtime) or "ort")
    report.emit(result)
    if not report.quiet:
        for item in result["predictions"]:
            best = ", ".join(f"{escape(label)} {p:.1%}" for label, p in item["top"])
            out.print(f"{escape(item['image'])}: {best}")
    for skipped in result["skipped"]:
        err.print(f"skipped {skipped['image']}: {skipped['reason']}", markup=False)


@command()
def package(
    model_file: Annotated[Path, typer.Argument(metavar="MODEL", help="An ONNX model (onnxruntime or openvino backend) or a TensorRT engine with its sidecar (tensorrt backend).")],
    triton: Annotated[Path, typer.Option("--triton", metavar="REPO", help="The Triton model repository folder to write into.")],
    name: Annotated[Optional[str], typer.Option("--name", help="Model name in the repository, the folder name (default alexnet).")] = None,
    max_batch: Annotated[Optional[int], typer.Option("--max-batch", help="Triton's max_batch_size (default 64; engines: at most their profile's max).")] = None,
    instances: Annotated[Optional[int], typer.Option("--instances", help="Model instances, the instance_group count (default 1).")] = None,
    no_dynamic_batching: Annotated[bool, flag("--no-dynamic-batching", help="Do not let Triton batch concurrent requests.")] = False,
    force: Annotated[bool, flag("--force", help="Replace an existing model of the same name.")] = False,
    backend: Annotated[Optional[TritonBackend], typer.Option("--backend", help="For ONNX models: onnxruntime (default) or openvino (Triton's OpenVINO backend, CPU; computes in BF16 on BF16 CPUs, it has no key to force f32).")] = None,
    json_target: JsonOpt = None,
):
    """Write a Triton Inference Server model repository entry: config.pbtxt, labels.txt, 1/model.onnx or 1/model.plan."""
    from alexnet_deploy.deploy.triton import package_triton

    report = JsonTarget(json_target)
    result = package_triton(model_file, triton, name or "alexnet", max_batch, 1 if instances is None else instances, not no_dynamic_batching, force, backend=value(backend))
    report.emit(result.to_dict())
    if not report.quiet:
        out.print(f"[green]wrote[/green] {escape(str(result.path))} ({result.backend} backend, max_batch_size {result.max_batch_size}, {result.labels} labels)")
        out.print(f"  serve it: tritonserver --model-repository {escape(str(Path(triton).resolve()))}", markup=False)


@command()
def serve(
    model_file: Annotated[Path, typer.Argument(metavar="MODEL.onnx", help="An exported ONNX model (FP32, FP16 or INT8).")],
    name: Annotated[str, typer.Option("--name", help="The model's name in URLs: /v2/models/NAME/infer.")] = "alexnet",
    host: Annotated[str, typer.Option("--host", help="Address to listen on (0.0.0.0 for every interface).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port (0: any free port, printed at start).")] = 8000,
    max_batch: Annotated[int, typer.Option("--max-batch", help="Most images the server batches into one model call.")] = 32,
    max_delay_ms: Annotated[float, typer.Option("--max-delay-ms", help="How long a request may wait for others to batch with.")] = 5.0,
    threads: ThreadsOpt = None,
):
    """Serve the model over the KServe v2 / Triton HTTP protocol, batching concurrent requests; stop with Ctrl-C or SIGTERM."""
    from alexnet_deploy.serve import serve as run_server

    def ready(url: str) -> None:
        out.print(f"serving {escape(str(model_file))} as {escape(name)} at {url}/v2/models/{escape(name)}/infer", markup=True)
        sys.stdout.flush()

    run_server(model_file, name, host, port, max_batch, max_delay_ms, threads, ready)
    err.print("stopped", markup=False)
