"""``package --kserve`` and its options: a KServe InferenceService next to the Triton repository."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from alexnet_deploy.cli.options import flag

PANEL = "KServe (Triton on Kubernetes)"

KServeOpt = Annotated[bool, flag("--kserve", panel=PANEL, help="Also write NAME-inferenceservice.yaml next to the repository: a KServe InferenceService running it on Triton (v2 protocol).")]
StorageUriOpt = Annotated[Optional[str], typer.Option("--storage-uri", metavar="URI", rich_help_panel=PANEL, help="Where the cluster finds the uploaded repository root (s3://, gs://, pvc://...); default a placeholder to replace.")]
ServiceOpt = Annotated[Optional[str], typer.Option("--service", rich_help_panel=PANEL, help="InferenceService name (default: from --name, lowercased, '_' and '.' as '-').")]
NamespaceOpt = Annotated[Optional[str], typer.Option("--namespace", rich_help_panel=PANEL, help="Kubernetes namespace (default: kubectl's current one).")]
MinReplicasOpt = Annotated[Optional[int], typer.Option("--min-replicas", rich_help_panel=PANEL, help="Fewest Triton replicas (default 1; 0 lets KServe scale to zero).")]
MaxReplicasOpt = Annotated[Optional[int], typer.Option("--max-replicas", rich_help_panel=PANEL, help="Most Triton replicas under load (default 1).")]
CpuOpt = Annotated[Optional[str], typer.Option("--cpu", rich_help_panel=PANEL, help="CPU per replica, a Kubernetes quantity (default 1).")]
MemoryOpt = Annotated[Optional[str], typer.Option("--memory", rich_help_panel=PANEL, help="Memory per replica (default 2Gi).")]
GpusOpt = Annotated[Optional[int], typer.Option("--gpus", rich_help_panel=PANEL, help="NVIDIA GPUs per replica (default 1 for TensorRT engines, else 0).")]


def kserve_manifest(model_file: Path, repo: Path, name: str, storage_uri, service, namespace, min_replicas, max_replicas, cpu, memory, gpus) -> tuple[Path, dict]:
    """The manifest and where it goes, checked before anything is written (TensorRT engines get a GPU by default)."""
    from alexnet_deploy.deploy.kserve import PLACEHOLDER_STORAGE_URI, Resources, inference_service
    from alexnet_deploy.onnx_file import file_kind

    if gpus is None:
        gpus = 1 if file_kind(Path(model_file)) == "engine" else 0
    manifest = inference_service(
        name, storage_uri or PLACEHOLDER_STORAGE_URI, service, namespace,
        1 if min_replicas is None else min_replicas, 1 if max_replicas is None else max_replicas,
        Resources(cpu or "1", memory or "2Gi", gpus),
    )
    return Path(repo).resolve().parent / f"{manifest['metadata']['name']}-inferenceservice.yaml", manifest
