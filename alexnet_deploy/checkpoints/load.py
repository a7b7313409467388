"""Reading checkpoints in every format people save them, safely by default.

Handles a bare state_dict; a dict wrapping one beside optimizer/epoch/metrics; the
``module.`` (DataParallel/DDP) and ``_orig_mod.`` (torch.compile) prefixes; GPU tensors
(loaded on the CPU); TorchScript archives; legacy (pre-1.6) files; safetensors files
(with the optional ``safetensors`` package); and a whole pickled ``nn.Module``, the last
only with ``trust_pickle=True`` because unpickling runs code.
"""

from __future__ import annotations

import io
import json
import pickletools
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from alexnet_deploy.errors import CheckpointError, DependencyError
from alexnet_deploy.fileio import sha256_file
from alexnet_deploy.onnx_file import check_input_file, looks_like_safetensors

# Keys under which training scripts store the weights, most specific first.
WRAPPER_KEYS = (
    "state_dict", "model_state_dict", "model_state", "model", "net", "network",
    "net_state_dict", "weights", "params", "module", "ema", "model_ema",
)
# Keys that may carry labels next to the weights.
LABEL_KEYS = ("classes", "class_names", "labels", "idx_to_class", "class_to_idx")
STRIPPED_PREFIXES = ("module.", "_orig_mod.")
# Globals no model checkpoint needs: refused even with --trust-pickle. A static scan
# catches ordinary malicious files; it is not a sandbox, so --trust-pickle stays an
# explicit statement that the file is trusted.
DANGEROUS_MODULES = ("os", "posix", "nt", "subprocess", "sys", "shutil", "socket", "runpy", "importlib", "pty", "webbrowser")
DANGEROUS_BUILTINS = ("eval", "exec", "compile", "__import__", "open", "getattr", "setattr", "delattr", "input", "breakpoint")


@dataclass
class Checkpoint:
    """What a checkpoint file held, normalised: a state_dict and maybe a ready module."""

    path: Path
    sha256: str
    format: str
    state_dict: dict
    module: Any = None
    wrapper_key: str | None = None
    stripped_prefixes: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    labels: list[str] | None = None

    @property
    def num_tensors(self) -> int:
        return len(self.state_dict)


def _pickle_globals(data: bytes) -> list[str]:
    """Module.name globals a pickle would import, found without executing it."""
    found, strings = [], []
    try:
        for opcode, arg, _ in pickletools.genops(io.BytesIO(data)):
            if opcode.name in ("GLOBAL", "INST"):
                found.append(str(arg).replace(" ", "."))
            elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                found.append(f"{strings[-2]}.{strings[-1]}")
            elif isinstance(arg, str):
                strings.append(arg)
    except Exception:
        pass  # a damaged pickle: report what was seen before the damage
    return sorted(set(found))


def _pickle_bytes(path: Path) -> bytes:
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                names = [n for n in archive.namelist() if n.endswith("data.pkl")]
                return archive.read(names[0]) if names else b""
        except (zipfile.BadZipFile, OSError, EOFError):
            return b""
    return path.read_bytes()


def _is_dangerous(name: str) -> bool:
    module, _, attr = name.rpartition(".")
    root = module.split(".")[0]
    return root in DANGEROUS_MODULES or (root in ("builtins", "__builtin__") and attr in DANGEROUS_BUILTINS)


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            return any(n.endswith("constants.pkl") or "/code/" in n for n in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _torch():
    from alexnet_deploy.errors import require

    return require("torch", "torch", "Reading PyTorch checkpoints")


def _is_state_dict(obj) -> bool:
    torch = _torch()
    return isinstance(obj, dict) and bool(obj) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _strip_prefixes(state_dict: dict) -> tuple[dict, list[str]]:
    stripped = []
    changed = True
    while changed:
        changed = False
        for prefix in STRIPPED_PREFIXES:
            if state_dict and all(k.startswith(prefix) for k in state_dict):
                state_dict = {k[len(prefix):]: v for k, v in state_dict.items()}
                stripped.append(prefix)
                changed = True
    return state_dict, stripped


def _labels_from(obj: dict) -> list[str] | None:
    for key in LABEL_KEYS:
        value = obj.get(key)
        if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
            return list(value)
        if isinstance(value, dict) and value:
            if all(isinstance(v, int) for v in value.values()):
                inverse = {v: str(k) for k, v in value.items()}
            else:
                inverse = {int(k): str(v) for k, v in value.items() if str(k).isdigit()}
            if sorted(inverse) == list(range(len(value))):
                return [inverse[i] for i in range(len(value))]
    return None


def _summarise(value) -> Any:
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return f"{type(value).__name__}[{len(value)}]"
    return type(value).__name__


def _refusal(path: Path, globals_: list[str]) -> CheckpointError:
    dangerous = [g for g in globals_ if _is_dangerous(g)]
    if dangerous:
        return CheckpointError(
            f"{path} asks to run code when unpickled ({', '.join(dangerous[:3])}); refusing to load it.",
            "this file may be malicious: do not load it; get the weights as a state_dict from a trusted source",
        )
    classes = [g for g in globals_ if not g.startswith(("torch.", "collections.", "numpy.", "_codecs.", "builtins.", "__builtin__."))]
    what = f"objects of {', '.join(classes[:3])}" if classes else "Python objects beyond tensors"
    return CheckpointError(
        f"{path} holds a pickled model ({what}); unpickling it runs code from the file.",
        "if you trust the file, add --trust-pickle (and --model FILE.py:Class if its class is not importable)",
    )


def load_checkpoint(path: Path, trust_pickle: bool = False, extra_classes: dict | None = None, extra_modules: dict | None = None) -> Checkpoint:
    """Read ``path`` into a :class:`Checkpoint`; never executes pickled code unless ``trust_pickle``.

    While unpickling a trusted whole-model file, ``extra_classes`` (name -> class) are
    importable from ``__main__`` (models saved from a script) and ``extra_modules``
    (module name -> module) from their own name (models saved from ``from model import Net``).
    """
    path = check_input_file(Path(path), "checkpoint")
    torch = _torch()
    sha = sha256_file(path)

    if looks_like_safetensors(path) or path.suffix.lower() == ".safetensors":  # by name too, so a damaged one says so
        return replace(_normalise(path, sha, _load_safetensors(path), None), format="safetensors")

    if _is_torchscript(path):
        try:
            module = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:
            raise CheckpointError(f"{path} looks like a TorchScript archive but cannot be loaded ({str(exc).splitlines()[0][:150]}).", "re-save it with torch.jit.save") from None
        state_dict, stripped = _strip_prefixes(dict(module.state_dict()))
        return Checkpoint(path, sha, "torchscript", state_dict, module=module.eval(), stripped_prefixes=stripped)

    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # every reader error below becomes one clear message
        message = str(exc)
        if "Weights only load failed" in message or "Unsupported global" in message or "Unsupported operand" in message:
            globals_ = _pickle_globals(_pickle_bytes(path))
            if not globals_:  # no class references at all: not a pickled model, just bytes
                raise _not_a_checkpoint(path, exc) from None
            if not trust_pickle or any(_is_dangerous(g) for g in globals_):
                raise _refusal(path, globals_) from None
            obj = _load_trusted(path, torch, extra_classes, extra_modules)
        else:
            raise _not_a_checkpoint(path, exc) from None
        fmt = "pickled"
    else:
        fmt = None
    return _normalise(path, sha, obj, fmt)


def _load_safetensors(path: Path) -> dict:
    """The file's tensors as a state_dict, with its string metadata (if any) beside them."""
    try:
        from safetensors import SafetensorError
        from safetensors.torch import safe_open
    except ImportError:
        raise DependencyError(f"{path} is a safetensors file, and reading it needs the safetensors package.", "pip install 'alexnet-deploy[safetensors]'") from None
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            state_dict = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file ({str(exc).splitlines()[0][:120]}).", "check that it was written completely (safetensors.torch.save_file)") from None
    if metadata:  # read like a torch.save wrapper dict, so labels ("classes": JSON list) and info come through
        return {**{k: _json_or_text(v) for k, v in metadata.items()}, "state_dict": state_dict}
    return state_dict


def _json_or_text(value: str):
    try:
        return json.loads(value)
    except ValueError:
        return value


def _not_a_checkpoint(path: Path, exc: BaseException) -> CheckpointError:
    reason = {EOFError: "the file ends early"}.get(type(exc))
    if reason is None:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "central directory" in text or "zip archive" in text:
            reason = "the zip archive is truncated or damaged"
        else:
            reason = f"{type(exc).__name__}: {text[:100]}"
    return CheckpointError(f"{path} is not a readable PyTorch checkpoint ({reason}).", "check that the file was saved with torch.save and copied completely")


def _load_trusted(path: Path, torch, extra_classes: dict | None, extra_modules: dict | None = None):
    import sys

    import __main__

    added = []
    for name, cls in (extra_classes or {}).items():
        if not hasattr(__main__, name):
            setattr(__main__, name, cls)
            added.append(name)
    aliased = [name for name in (extra_modules or {}) if name not in sys.modules]
    for name in aliased:
        sys.modules[name] = extra_modules[name]
    try:
        return torch.load(str(path), map_location="cpu", weights_only=False)
    except (AttributeError, ModuleNotFoundError, ImportError) as exc:
        raise CheckpointError(
            f"{path} is a pickled model whose class cannot be found ({str(exc).splitlines()[0][:150]}).",
            "pass --model FILE.py:ClassName pointing at the class it was saved from",
        ) from None
    except Exception as exc:
        raise _not_a_checkpoint(path, exc) from None
    finally:
        for name in added:
            delattr(__main__, name)
        for name in aliased:
            sys.modules.pop(name, None)


def _normalise(path: Path, sha: str, obj, fmt: str | None) -> Checkpoint:
    torch = _torch()
    module = None
    wrapper_key = None
    info: dict[str, Any] = {}
    labels = None

    if isinstance(obj, torch.nn.Module):
        module, state_dict, fmt = obj, obj.state_dict(), "pickled-module"
    elif _is_state_dict(obj):
        state_dict, fmt = obj, fmt or "state_dict"
    elif isinstance(obj, dict):
        labels = _labels_from(obj)
        candidates = [k for k in WRAPPER_KEYS if k in obj] + [k for k in obj if k not in WRAPPER_KEYS]
        state_dict = None
        for key in candidates:
            value = obj[key]
            if isinstance(value, torch.nn.Module):
                module, state_dict, wrapper_key = value, value.state_dict(), key
                break
            if _is_state_dict(value):
                state_dict, wrapper_key = value, key
                break
        if state_dict is None:
            # A state_dict that also holds non-tensor entries (rare but seen): keep the tensors.
            tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
            if len(tensors) >= 2:
                state_dict = tensors
            else:
                keys = ", ".join(sorted(map(str, obj))[:8])
                raise CheckpointError(
                    f"{path} holds a dict without model weights (keys: {keys}).",
                    "save the model with torch.save(model.state_dict(), PATH)",
                )
        info = {str(k): _summarise(v) for k, v in obj.items() if k != wrapper_key and not isinstance(v, (dict, torch.nn.Module))}
        fmt = f"wrapped[{wrapper_key}]" if wrapper_key else "state_dict+extras"
    else:
        raise CheckpointError(
            f"{path} holds a {type(obj).__name__}, not model weights.",
            "save the model with torch.save(model.state_dict(), PATH)",
        )
    if module is not None:
        module = module.float().eval()
    state_dict, stripped = _strip_prefixes(dict(state_dict))
    return Checkpoint(path, sha, fmt, state_dict, module, wrapper_key, stripped, info, labels)
