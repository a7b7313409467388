"""Reading checkpoints safely and turning them into networks: formats, layouts, user classes.  [torch]

Public API: ``load_checkpoint`` / ``Checkpoint`` (every format, safe by default),
``resolve_model`` / ``ResolvedModel`` (checkpoint + options -> ready nn.Module),
``ModelOptions`` (the --arch/--model/... flags), ``LAYOUTS`` / ``detect_layout``.
"""

from alexnet_deploy._lazy import lazy_exports

_NAMES = {
    "Checkpoint": "load", "load_checkpoint": "load",
    "ResolvedModel": "resolve", "resolve_model": "resolve",
    "ModelOptions": "options", "LAYOUT_NAMES": "options",
    "LAYOUTS": "layouts", "detect_layout": "layouts",
}
__all__ = sorted(_NAMES)
__getattr__, __dir__ = lazy_exports(__name__, _NAMES)
