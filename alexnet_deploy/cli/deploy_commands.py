"""Commands that put a model to work: predict, package (Triton), serve (KServe v2 / Triton HTTP)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from alexnet_deploy.cli.app import JsonTarget, command, err, out, progress_steps
from alexnet_deploy.cli.options import FollowLinksOpt, JsonOpt, OnnxRuntimeOpt, ThreadsOpt, TritonBackend, WorkersOpt, flag, value
from alexnet_deploy.cli.kserve_options import (
    CpuOpt, GpusOpt, KServeOpt, MaxReplicasOpt, MemoryOpt, MinReplicasOpt, NamespaceOpt, ServiceOpt, StorageUriOpt, kserve_manifest,
)
from alexnet_deploy.cli.ray_options import ActorsOpt, RayBatchOpt, RayFormatOpt, RayOpt, RayOutputOpt


@command()
def predict(
    model_file: Annotated[Path, typer.Argument(metavar="MODEL.onnx", help="An exported ONNX model (FP32, FP16 or INT8).")],
    images: Annotated[list[Path], typer.Argument(metavar="IMAGE...", help="Image files, or folders of them.")],
    topk: Annotated[Optional[int], typer.Option("--topk", help="How many classes to show per image (default 5).")] = None,
    output: RayOutputOpt = None,
    batch: RayBatchOpt = None,
    json_target: JsonOpt = None,
    threads: ThreadsOpt = None,
    workers: WorkersOpt = None,
    follow_links: FollowLinksOpt = False,
    runtime: OnnxRuntimeOpt = None,
    ray: RayOpt = None,
    actors: ActorsOpt = None,
    output_format: RayFormatOpt = None,
):
    """Label images: the top classes and their probabilities, with labels and preprocessing from the model file.

    Images are decoded and preprocessed by --workers threads while the model runs on the
    previous batch; results keep the input order. Undecodable files and images over the
    pixel limit are skipped and listed; no decodable image at all is an error. With
    -o FILE.parquet|FILE.jsonl the rows stream into that file (for folders of any size).
    With --ray the same predictions are computed by Ray Data (local instance or cluster).
    """
    from alexnet_deploy.errors import InputError
    from alexnet_deploy.predict import predict_files

    report = JsonTarget(json_target)
    if ray is not None:
        from alexnet_deploy.cli.ray_options import run_predict_ray

        if value(runtime) not in (None, "ort"):
            raise InputError("--ray runs the model on onnxruntime in its actors; --runtime applies to local runs.", "drop --runtime, or drop --ray")
        if workers is not None or follow_links:
            raise InputError("--workers and --follow-links apply to local runs; Ray reads and decodes in its own tasks.", "drop them, or drop --ray")
        return run_predict_ray(model_file, images, topk, report, threads, ray, actors, batch, output, output_format)
    if actors is not None or output_format is not None:
        raise InputError("--actors and --format apply to --ray runs (a local -o takes its format from the file name).", "add --ray (a local Ray instance) or drop them")

    def show(item) -> None:
        if not report.quiet and output is None:
            best = ", ".join(f"{escape(label)} {p:.1%}" for label, p in item["top"])
            out.print(f"{escape(item['image'])}: {best}")

    with progress_steps(report.quiet or output is None) as progress:  # a bar only while rows go to a file
        result = predict_files(model_file, images, topk=5 if topk is None else topk, threads=threads, runtime=value(runtime) or "ort",
                               output=None if output is None else Path(output), batch=batch, workers=workers, follow_links=follow_links,
                               on_prediction=show, progress=progress)
    report.emit(result)
    for skipped in result["skipped"]:
        err.print(f"skipped {skipped['image']}: {skipped['reason']}", markup=False)
    if output is not None and not report.quiet:
        out.print(f"[green]labelled[/green] {result['images']} images -> {escape(str(output))} ({result['format']}): "
                  f"{result['images_per_s']:.1f} images/s, {len(result['skipped'])} skipped")


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
    image_input: Annotated[bool, flag("--image-input", help="Also write NAME_image, an ensemble that takes encoded JPEG/PNG files (BYTES input 'image') and preprocesses them with the file's record in a Python backend step, NAME_preprocess (Triton's Python needs numpy and Pillow).")] = False,
    json_target: JsonOpt = None,
    kserve: KServeOpt = False,
    storage_uri: StorageUriOpt = None,
    service: ServiceOpt = None,
    namespace: NamespaceOpt = None,
    min_replicas: MinReplicasOpt = None,
    max_replicas: MaxReplicasOpt = None,
    cpu: CpuOpt = None,
    memory: MemoryOpt = None,
    gpus: GpusOpt = None,
):
    """Write a Triton Inference Server model repository entry: config.pbtxt, labels.txt, 1/model.onnx or 1/model.plan.

    An ONNX file's external weights are copied with it, and the copy must load (onnx.checker)
    before it takes its place. With --image-input, also an ensemble that accepts encoded
    images. With --kserve, also a KServe InferenceService that serves the repository on Triton.
    """
    from alexnet_deploy.deploy.triton import package_triton

    report = JsonTarget(json_target)
    kserve_values = (storage_uri, service, namespace, min_replicas, max_replicas, cpu, memory, gpus)
    if not kserve and any(v is not None for v in kserve_values):
        from alexnet_deploy.errors import InputError

        raise InputError("--storage-uri, --service, --namespace, --min/max-replicas, --cpu, --memory and --gpus apply to --kserve.", "add --kserve or drop them")
    if kserve:  # made (and checked) before the repository is written
        manifest_path, manifest = kserve_manifest(model_file, triton, name or "alexnet", *kserve_values)
    result = package_triton(model_file, triton, name or "alexnet", max_batch, 1 if instances is None else instances, not no_dynamic_batching, force,
                            backend=value(backend), image_input=image_input)
    data = result.to_dict()
    if kserve:
        from alexnet_deploy.deploy.kserve import write_manifest

        write_manifest(manifest_path, manifest)
        data["kserve"] = {"path": str(manifest_path), "manifest": manifest, "placeholder_storage_uri": storage_uri is None}
    report.emit(data)
    if not report.quiet:
        out.print(f"[green]wrote[/green] {escape(str(result.path))} ({result.backend} backend, max_batch_size {result.max_batch_size}, {result.labels} labels)")
        if result.image_ensemble is not None:
            out.print(f"[green]wrote[/green] {escape(str(result.image_ensemble))} (ensemble: encoded images in 'image') and {escape(str(result.preprocess))} (Python backend step)")
        out.print(f"  serve it: tritonserver --model-repository {escape(str(Path(triton).resolve()))}", markup=False)
        if kserve:
            out.print(f"[green]wrote[/green] {escape(data['kserve']['path'])} (KServe InferenceService, Triton runtime, v2 protocol)")
            if data["kserve"]["placeholder_storage_uri"]:
                out.print("  replace its placeholder storageUri (or pass --storage-uri) with where you upload the repository", markup=False)
            out.print(f"  deploy it: kubectl apply -f {escape(data['kserve']['path'])}", markup=False)


@command()
def serve(
    model_file: Annotated[Path, typer.Argument(metavar="MODEL.onnx", help="An exported ONNX model (FP32, FP16 or INT8).")],
    name: Annotated[str, typer.Option("--name", help="The model's name in URLs: /v2/models/NAME/infer.")] = "alexnet",
    host: Annotated[str, typer.Option("--host", help="Address to listen on (0.0.0.0 for every interface).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port (0: any free port, printed at start).")] = 8000,
    max_batch: Annotated[int, typer.Option("--max-batch", help="Most images the server batches into one model call.")] = 32,
    max_delay_ms: Annotated[float, typer.Option("--max-delay-ms", help="How long a request may wait for others to batch with.")] = 5.0,
    threads: ThreadsOpt = None,
    runtime: OnnxRuntimeOpt = None,
    max_body_mb: Annotated[float, typer.Option("--max-body-mb", help="Largest request body, and input tensor by its declared shape (MiB).", rich_help_panel="Limits")] = 64,
    max_json_mb: Annotated[float, typer.Option("--max-json-mb", help="Largest JSON body or JSON header (MiB); send big batches as binary tensors.", rich_help_panel="Limits")] = 16,
    max_connections: Annotated[int, typer.Option("--max-connections", help="Open client connections; more get 503 and are closed.", rich_help_panel="Limits")] = 128,
    max_queue: Annotated[int, typer.Option("--max-queue", help="Requests waiting for the model; more get 503 with Retry-After.", rich_help_panel="Limits")] = 64,
    max_pending_mb: Annotated[float, typer.Option("--max-pending-mb", help="Memory all requests in progress may hold (MiB); past it, 503 with Retry-After.", rich_help_panel="Limits")] = 256,
    request_timeout_s: Annotated[float, typer.Option("--request-timeout-s", help="Time to send one whole request (and idle keep-alive time) before the connection is dropped.", rich_help_panel="Limits")] = 30,
    infer_timeout_s: Annotated[float, typer.Option("--infer-timeout-s", help="How long a request waits for the model before a 503 (its job is then dropped).", rich_help_panel="Limits")] = 60,
):
    """Serve the model over the KServe v2 / Triton HTTP protocol, batching concurrent requests; stop with Ctrl-C or SIGTERM."""
    from alexnet_deploy.serve import Limits, serve as run_server

    limits = Limits(
        max_body_mb=max_body_mb, max_json_mb=max_json_mb, max_connections=max_connections, max_queue=max_queue,
        max_pending_mb=max_pending_mb, request_timeout_s=request_timeout_s, infer_timeout_s=infer_timeout_s,
    )

    def ready(url: str) -> None:
        out.print(f"serving {escape(str(model_file))} as {escape(name)} at {url}/v2/models/{escape(name)}/infer", markup=True)
        sys.stdout.flush()

    run_server(model_file, name, host, port, max_batch, max_delay_ms, threads, ready, limits=limits, runtime=value(runtime) or "ort")
    err.print("stopped", markup=False)
