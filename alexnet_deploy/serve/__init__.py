"""``alexnet serve``: the KServe v2 / Triton HTTP inference protocol over onnxruntime (stdlib HTTP server).

Endpoints: ``GET /v2/health/live``, ``/v2/health/ready``, ``/v2`` (server metadata),
``/v2/models/NAME`` (model metadata), ``/v2/models/NAME/ready``, ``/v2/models/NAME/stats``,
``POST /v2/models/NAME/infer`` with JSON tensors or the binary tensor extension
(``Inference-Header-Content-Length``), as Triton's own clients send them, and Triton's
classification extension.

Modules: :mod:`.batcher` (queue and worker), :mod:`.protocol` (request decoding and response
encoding, no I/O), :mod:`.model` (the loaded model), :mod:`.http` (handler, server, signals),
:mod:`.limits` (every cap and its default). Nothing here imports torch.
"""

from alexnet_deploy.serve.batcher import Batcher
from alexnet_deploy.serve.http import make_server, serve
from alexnet_deploy.serve.limits import Limits
from alexnet_deploy.serve.model import ModelService
from alexnet_deploy.serve.protocol import Codec, RequestError

__all__ = ["Batcher", "Codec", "Limits", "ModelService", "RequestError", "make_server", "serve"]
