"""``alexnet package --triton REPO --kserve``: a KServe InferenceService that serves REPO with Triton.

The manifest (``serving.kserve.io/v1beta1``) names the ``kserve-tritonserver`` runtime with
``modelFormat: triton`` and ``protocolVersion: v2``, so the cluster speaks the same KServe v2
/ Triton HTTP protocol as ``alexnet serve``: the client code that talks to one talks to the
other (``/v2/models/NAME/infer``, NAME being the Triton model's folder, not the service).
``storageUri`` points at the repository root (the folder holding NAME/config.pbtxt) once it
is uploaded; the default is a placeholder to replace.

The file is YAML written by a small emitter here: block mappings with every string quoted as
a JSON string (which YAML reads as the same string), so no YAML library is needed at run
time and values like ``2Gi``, ``on`` or ``1e3`` cannot change type on the way to the cluster.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alexnet_deploy.errors import InputError

API_VERSION = "serving.kserve.io/v1beta1"
RUNTIME = "kserve-tritonserver"
PLACEHOLDER_STORAGE_URI = "s3://CHANGE-ME/alexnet-repository"
# Kubernetes object names (RFC 1123 label, as KServe requires for an InferenceService).
_NAME = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")
_QUANTITY = re.compile(r"[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?")


@dataclass
class Resources:
    """Per-replica requests (limits: the same, plus GPUs, which Kubernetes only takes as limits)."""

    cpu: str = "1"
    memory: str = "2Gi"
    gpus: int = 0

    def to_dict(self) -> dict[str, Any]:
        for what, value in (("cpu", self.cpu), ("memory", self.memory)):
            if not _QUANTITY.fullmatch(str(value)):
                raise InputError(f"--{what} {value!r} is not a Kubernetes quantity.", "e.g. --cpu 2 or --cpu 500m, --memory 4Gi")
        if self.gpus < 0:
            raise InputError(f"--gpus {self.gpus} must be 0 or more.", "e.g. --gpus 1")
        requests = {"cpu": str(self.cpu), "memory": str(self.memory)}
        limits = dict(requests)
        if self.gpus:
            limits["nvidia.com/gpu"] = str(self.gpus)
        return {"requests": requests, "limits": limits}


def service_name(model_name: str) -> str:
    """A valid InferenceService name from a Triton model name (lowercase; '_' and '.' become '-')."""
    name = re.sub(r"[^a-z0-9-]", "-", model_name.lower()).strip("-")
    if not name or not name[0].isalpha():
        name = f"alexnet-{name}".strip("-")
    if not _NAME.fullmatch(name):
        raise InputError(f"cannot make a Kubernetes name from model name {model_name!r}.", "pass --service NAME: lowercase letters, digits and '-', at most 63")
    return name


def inference_service(
    model_name: str,
    storage_uri: str = PLACEHOLDER_STORAGE_URI,
    service: str | None = None,
    namespace: str | None = None,
    min_replicas: int = 1,
    max_replicas: int = 1,
    resources: Resources | None = None,
) -> dict[str, Any]:
    """The InferenceService as a plain dict, with KServe's camelCase field names."""
    service = service_name(model_name) if service is None else service
    if not _NAME.fullmatch(service):
        raise InputError(f"service name {service!r} is not a valid Kubernetes name.", "use lowercase letters, digits and '-', starting with a letter, at most 63")
    if min_replicas < 0 or max_replicas < max(1, min_replicas):
        raise InputError(f"replicas min {min_replicas} / max {max_replicas} are not a valid range.", "use 0 <= --min-replicas <= --max-replicas, --max-replicas >= 1")
    if not storage_uri or " " in storage_uri:
        raise InputError(f"--storage-uri {storage_uri!r} is not a URI.", "e.g. --storage-uri s3://bucket/alexnet-repository or pvc://claim/path")
    metadata: dict[str, Any] = {"name": service}
    if namespace:
        metadata["namespace"] = namespace
    metadata["annotations"] = {"alexnet-deploy/triton-model": model_name}  # the name clients put in /v2/models/NAME
    return {
        "apiVersion": API_VERSION,
        "kind": "InferenceService",
        "metadata": metadata,
        "spec": {
            "predictor": {
                "minReplicas": int(min_replicas),
                "maxReplicas": int(max_replicas),
                "model": {
                    "modelFormat": {"name": "triton"},
                    "protocolVersion": "v2",
                    "runtime": RUNTIME,
                    "storageUri": storage_uri,
                    "resources": (resources or Resources()).to_dict(),
                },
            },
        },
    }


def to_yaml(value: Any, indent: int = 0) -> str:
    """Block-style YAML for dicts of dicts/lists/str/int/bool; strings as JSON strings (see the module doc)."""
    pad = "  " * indent
    lines: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            # Plain identifiers stay bare; keys like nvidia.com/gpu or alexnet-deploy/... are quoted.
            key_text = key if re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", str(key)) else json.dumps(str(key))
            if isinstance(item, (dict, list)) and item:
                lines.append(f"{pad}{key_text}:")
                lines.append(to_yaml(item, indent + 1))
            else:
                lines.append(f"{pad}{key_text}: {_scalar(item)}")
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, (dict, list)) and item:
                body = to_yaml(item, indent + 1).lstrip()
                lines.append(f"{pad}- {body}")
            else:
                lines.append(f"{pad}- {_scalar(item)}")
    else:
        lines.append(pad + _scalar(value))
    return "\n".join(lines)


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, dict):
        return "{}"
    if isinstance(value, list):
        return "[]"
    return json.dumps(str(value))


def write_manifest(path: Path, manifest: dict[str, Any]) -> Path:
    """Write the manifest as YAML, atomically."""
    from alexnet_deploy.fileio import atomic_write_bytes

    text = "# KServe InferenceService written by alexnet-deploy: kubectl apply -f " + Path(path).name + "\n" + to_yaml(manifest) + "\n"
    return atomic_write_bytes(Path(path), text.encode())
