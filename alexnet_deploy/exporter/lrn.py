"""Local Response Normalization as one ONNX ``LRN`` node.

``torch.onnx.export`` traces ``F.local_response_norm`` into Pad/AveragePool/Pow/Div,
and a hand-written LRN with Python loops into thousands of nodes with the batch size
frozen. Here every LRN that forward actually executes is found with hooks, mapped to
ONNX's convention, and routed through a custom op whose ONNX translation is ``LRN``.

Conventions (C channels, sum over a window of squared inputs):
- ONNX:   ``x / (bias + alpha/size * sum)^beta``, window ``[c - (size-1)//2, c + size//2]``.
- PyTorch ``nn.LocalResponseNorm``: same formula; window ``[c - size//2, c + (size-1)//2]``,
  equal to ONNX's only for odd ``size``. Even sizes keep PyTorch's exact decomposition.
- Paper / seed 001: ``x / (k + alpha * sum)^beta`` (alpha not divided), window ``n//2``
  each side: ONNX ``size = 2*(n//2)+1``, ``alpha = alpha * size``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

SIZE_ATTRS = ("size", "n", "local_size", "lrn_size", "window", "depth")
RADIUS_ATTRS = ("depth_radius", "radius")
BIAS_ATTRS = ("k", "bias", "knorm")
# Largest window considered when matching a hand-written module (TensorRT itself accepts 1..15).
MAX_SIZE = 31


def reference_lrn(x: torch.Tensor, size: int, alpha: float, beta: float, bias: float) -> torch.Tensor:
    """ONNX ``LRN`` semantics in PyTorch, for any input of rank >= 3 (N, C, ...)."""
    lo, hi = (size - 1) // 2, size // 2
    squared = (x * x).reshape(x.shape[0], 1, x.shape[1], -1)
    squared = F.pad(squared, (0, 0, lo, hi))
    summed = F.avg_pool2d(squared, (size, 1), stride=1).reshape(x.shape) * size
    return x / (bias + (alpha / size) * summed).pow(beta)


@torch.library.custom_op("alexnet_deploy::lrn", mutates_args=())
def lrn_op(x: torch.Tensor, size: int, alpha: float, beta: float, bias: float) -> torch.Tensor:
    """Custom op exported as exactly one ONNX LRN node."""
    return reference_lrn(x, size, alpha, beta, bias)


@lrn_op.register_fake
def _lrn_fake(x, size, alpha, beta, bias):
    return torch.empty_like(x)


def lrn_onnx_translation(x, size: int, alpha: float, beta: float, bias: float):
    """onnxscript translation of ``alexnet_deploy::lrn``: one LRN node."""
    from onnxscript import opset18 as op

    return op.LRN(x, size=size, alpha=alpha, beta=beta, bias=bias)


class OnnxLRN(nn.Module):
    """Stand-in used during export: ONNX-convention LRN through the custom op."""

    def __init__(self, size: int, alpha: float, beta: float, bias: float):
        super().__init__()
        self.size, self.alpha, self.beta, self.bias = int(size), float(alpha), float(beta), float(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return lrn_op(x, self.size, self.alpha, self.beta, self.bias)


@dataclass
class LRNSite:
    """One LRN that forward executes, and how it is exported."""

    name: str
    kind: str  # "nn.LocalResponseNorm" | "functional" | "hand-written"
    params: dict[str, Any]
    onnx: dict[str, Any] | None = None
    calls: int = 1
    input_shape: tuple[int, ...] = ()
    note: str = ""
    module: Any = field(default=None, repr=False)

    @property
    def exact(self) -> bool:
        return self.onnx is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "kind": self.kind, "params": self.params, "onnx_lrn": self.onnx,
            "calls": self.calls, "input_shape": list(self.input_shape), "note": self.note,
        }


def _number(module: nn.Module, names) -> tuple[str, float] | None:
    for attr in names:
        value = getattr(module, attr, None)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return attr, float(value)
    return None


def lrn_like_params(module: nn.Module) -> dict[str, Any] | None:
    """Hyper-parameters of a hand-written LRN module, read from its attributes, or None."""
    if list(module.children()) or any(True for _ in module.parameters(recurse=False)):
        return None
    if type(module).__module__.startswith("torch.nn"):
        return None
    alpha, beta = _number(module, ("alpha",)), _number(module, ("beta",))
    size = _number(module, SIZE_ATTRS)
    radius = _number(module, RADIUS_ATTRS)
    if alpha is None or beta is None or (size is None and radius is None):
        return None
    bias = _number(module, BIAS_ATTRS)
    params = {"alpha": alpha[1], "beta": beta[1], "k": bias[1] if bias else 1.0}
    if radius is not None:
        params["depth_radius"] = int(radius[1])
    else:
        params[size[0]] = int(size[1])
    return params


def _candidates(params: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    alpha, beta, k = params["alpha"], params["beta"], params["k"]
    found = []
    if "depth_radius" in params:
        size = 2 * params["depth_radius"] + 1
        found.append(("sum over depth_radius each side (TensorFlow)", {"size": size, "alpha": alpha * size}))
        found.append(("mean over depth_radius each side", {"size": size, "alpha": alpha}))
    else:
        n = next(v for key, v in params.items() if key not in ("alpha", "beta", "k"))
        size = 2 * (n // 2) + 1
        found.append((f"paper formula: alpha * sum over n//2={n // 2} channels each side", {"size": size, "alpha": alpha * size}))
        if n % 2 == 1:
            found.append(("PyTorch formula: alpha/n * sum", {"size": n, "alpha": alpha}))
        found.append(("alpha/n * sum over n//2 channels each side", {"size": size, "alpha": alpha / n * size}))
    unique = []
    for label, onnx in found:
        if 1 <= onnx["size"] <= MAX_SIZE and all(onnx != seen for _, seen in unique):
            unique.append((label, onnx))
    return [(label, {**onnx, "beta": beta, "bias": k}) for label, onnx in unique]


def _matches(module: nn.Module, probe: torch.Tensor, onnx: dict[str, Any]) -> bool:
    with torch.no_grad():
        got = module(probe.clone())
        want = reference_lrn(probe, **onnx)
    if not isinstance(got, torch.Tensor) or got.shape != want.shape:
        return False
    got = got.to(want.dtype).cpu()
    return bool(torch.isfinite(got).all()) and float((got - want).abs().max()) <= 1e-5 * float(want.abs().max()) + 1e-7


def map_hand_written(module: nn.Module, params: dict[str, Any], input_shape: tuple[int, ...]) -> tuple[dict | None, str]:
    """The ONNX LRN equivalent of a hand-written module, confirmed on probe inputs, or (None, why)."""
    if hasattr(module, "onnx_lrn"):
        return dict(module.onnx_lrn()), "declared by the module"
    generator = torch.Generator().manual_seed(0)
    shape = (1, *input_shape[1:])
    # Scale so alpha * window * x^2 is about 1: the conventions then differ clearly.
    window = max(params.get("depth_radius", 0) * 2 + 1, *(v for key, v in params.items() if key not in ("alpha", "beta", "k", "depth_radius")), 1)
    scale = (3.0 / max(params["alpha"] * window, 1e-12)) ** 0.5
    probes = [torch.rand(shape, generator=generator) * scale, torch.randn(shape, generator=generator) * scale]
    for label, onnx in _candidates(params):
        if all(_matches(module, p, onnx) for p in probes):
            return onnx, label
    return None, "its outputs match no LRN convention"


@contextlib.contextmanager
def _call_tracker(model: nn.Module) -> Iterator[list[str]]:
    stack: list[str] = []
    handles = []
    for name, module in model.named_modules():
        def pre(mod, args, _name=name):
            stack.append(_name)

        def post(mod, args, out):
            stack.pop()

        handles.append(module.register_forward_pre_hook(pre))
        handles.append(module.register_forward_hook(post))
    try:
        yield stack
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def _patched_functional(replacement) -> Iterator[None]:
    original = F.local_response_norm
    F.local_response_norm = replacement
    try:
        yield
    finally:
        F.local_response_norm = original


def find_lrn_sites(model: nn.Module, example: torch.Tensor) -> list[LRNSite]:
    """Every LRN that ``model(example)`` executes, with its ONNX mapping (None if inexact)."""
    original = F.local_response_norm
    functional: dict[str, LRNSite] = {}
    hand: dict[str, LRNSite] = {}
    inputs: dict[str, tuple[int, ...]] = {}
    calls: dict[str, int] = {}
    names = {id(m): n for n, m in model.named_modules()}
    candidates = {name: (m, lrn_like_params(m)) for name, m in model.named_modules()}
    candidates = {name: v for name, v in candidates.items() if v[1] is not None}

    with _call_tracker(model) as stack:
        def recording_lrn(input, size, alpha=1e-4, beta=0.75, k=1.0):
            owner = stack[-1] if stack else "<forward>"
            module = dict(model.named_modules()).get(owner)
            kind = "nn.LocalResponseNorm" if isinstance(module, nn.LocalResponseNorm) else "functional"
            label = owner if kind == "nn.LocalResponseNorm" else f"{owner or '<forward>'} (F.local_response_norm)"
            if label in functional:
                functional[label].calls += 1
            else:
                params = {"size": int(size), "alpha": float(alpha), "beta": float(beta), "k": float(k)}
                onnx = {"size": int(size), "alpha": float(alpha), "beta": float(beta), "bias": float(k)} if size % 2 == 1 else None
                note = "" if onnx else "even size: PyTorch's window is shifted against ONNX's; exported as an exact decomposition"
                functional[label] = LRNSite(label, kind, params, onnx, input_shape=tuple(input.shape), note=note)
            return original(input, size, alpha, beta, k)

        def remember_input(name):
            def hook(mod, args):
                inputs.setdefault(name, tuple(args[0].shape))  # returns None: args unchanged
                calls[name] = calls.get(name, 0) + 1

            return hook

        hooks = [module.register_forward_pre_hook(remember_input(name)) for name, (module, _) in candidates.items()]
        try:
            with _patched_functional(recording_lrn), torch.no_grad():
                model(example)
        finally:
            for handle in hooks:
                handle.remove()

    for name, (module, params) in candidates.items():
        if name not in inputs or any(site.name.startswith(name + " ") for site in functional.values()):
            continue  # never called, or it calls F.local_response_norm (already recorded)
        onnx, how = map_hand_written(module, params, inputs[name])
        note = how if onnx else f"{how}; exported as traced PyTorch ops"
        hand[name] = LRNSite(name, "hand-written", params, onnx, calls=calls[name], input_shape=inputs[name], note=note, module=module)
    order = {name: i for i, name in enumerate(names.values())}
    return sorted([*functional.values(), *hand.values()], key=lambda s: order.get(s.name.split(" ")[0], len(order)))


def _export_functional(input, size, alpha=1e-4, beta=0.75, k=1.0):
    if size % 2 == 1 and input.dim() >= 3:
        return lrn_op(input, int(size), float(alpha), float(beta), float(k))
    return _ORIGINAL_FUNCTIONAL(input, size, alpha, beta, k)


_ORIGINAL_FUNCTIONAL = F.local_response_norm


@contextlib.contextmanager
def lrn_as_onnx_op(model: nn.Module, sites: list[LRNSite]) -> Iterator[nn.Module]:
    """Within the block, ``model``'s exactly-mappable LRNs run through the ONNX LRN op.

    Hand-written modules are swapped for :class:`OnnxLRN` in place (restored on exit);
    ``F.local_response_norm`` calls with odd sizes are routed to the op.
    """
    swapped = []
    try:
        for site in sites:
            if site.kind == "hand-written" and site.onnx:
                parent_name, _, attr = site.name.rpartition(".")
                parent = model.get_submodule(parent_name) if parent_name else model
                swapped.append((parent, attr, getattr(parent, attr)))
                setattr(parent, attr, OnnxLRN(**site.onnx))
        with _patched_functional(_export_functional):
            yield model
    finally:
        for parent, attr, original in reversed(swapped):
            setattr(parent, attr, original)
