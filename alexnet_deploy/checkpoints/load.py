"""Reading checkpoints in every format people save them, safely by default.

Handles a bare state_dict; a dict wrapping one beside optimizer/epoch/metrics; the
``module.`` (DataParallel/DDP) and ``_orig_mod.`` (torch.compile) prefixes; GPU tensors
(loaded on the CPU); TorchScript archives; legacy (pre-1.6) files; safetensors files
(with the optional ``safetensors`` package); and a whole pickled ``nn.Module``.

Nothing from the file runs unless the caller passes ``trust_code=True`` (``--trust-code``);
without it TorchScript weights are read by a restricted unpickler that only builds tensors, and
pickles go through ``torch.load(weights_only=True)``. Even with trust, a pickle may only name
the classes an image classifier is built from (``pickles.trusted_classes()``: torch.nn layers
and containers, a few torchvision classifiers) and the ``--model`` file's classes; anything
else (torch.fx, torch.export, torch.jit, ...) is refused by name, and a loaded model holding
hooks or callables is refused too. The file is read once: the bytes hashed are the bytes
checked and loaded.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from alexnet_deploy.errors import CheckpointError, DependencyError
from alexnet_deploy.checkpoints.pickles import (
    MALICIOUS_FIX, TRUST_RUNS, TRUSTED_PACKAGES, allowed_class, check_loaded, load_allowlisted, named_globals, needed_globals, not_a_checkpoint, numpy_data,
    quiet_torch_load, refusal, unsafe_user_classes, user_classes,
)
from alexnet_deploy.checkpoints.torchscript import is_torchscript, torchscript_tensors
from alexnet_deploy.onnx_file import check_input_file

# Keys under which training scripts store the weights, most specific first.
WRAPPER_KEYS = (
    "state_dict", "model_state_dict", "model_state", "model", "net", "network",
    "net_state_dict", "weights", "params", "module", "ema", "model_ema",
)
# Keys that may carry labels next to the weights.
LABEL_KEYS = ("classes", "class_names", "labels", "idx_to_class", "class_to_idx")
STRIPPED_PREFIXES = ("module.", "_orig_mod.")
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
                inverse = {int(k): str(v) for k, v in value.items() if str(k).isascii() and str(k).isdecimal()}
            if sorted(inverse) == list(range(len(value))):
                return [inverse[i] for i in range(len(value))]
    return None


def _summarise(value) -> Any:
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return f"{type(value).__name__}[{len(value)}]"
    return type(value).__name__


def load_checkpoint(
    path: Path, trust_code: bool = False, extra_classes: dict | None = None, extra_modules: dict | None = None,
    *, trust_pickle: bool | None = None,
) -> Checkpoint:
    """Read ``path`` into a :class:`Checkpoint`; runs no code from the file unless ``trust_code``.

    ``extra_classes`` (name -> class, saved from a script's ``__main__``) and ``extra_modules``
    (module name -> module, saved after ``from model import Net``) are the user's ``--model``
    file: its ``nn.Module`` classes may be named by a trusted pickled model. ``trust_pickle``
    is the old name of ``trust_code``.
    """
    trust_code = bool(trust_code or trust_pickle)
    path = check_input_file(Path(path), "checkpoint")
    _torch()  # every format below needs torch (DependencyError naming the extra otherwise)
    # One read: what is hashed (and recorded in the ONNX metadata) is what is checked and loaded.
    data = path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()

    if _looks_like_safetensors(data) or path.suffix.lower() == ".safetensors":  # by name too, so a damaged one says so
        return replace(_normalise(path, sha, _load_safetensors(path, data), None), format="safetensors")

    archive = _open_zip(data)
    if archive is not None:
        _check_archive(path, archive, len(data))
    if archive is not None and is_torchscript(archive):
        return _load_torchscript(path, sha, data, archive, trust_code)
    if archive is None and not (len(data) >= 2 and data[0] == 0x80 and 2 <= data[1] <= 5):
        # Neither torch.save's zip nor a pre-1.6 pickle: do not hand it to an unpickler, whose
        # opcodes would read a text file such as "cat\ndog" as a GLOBAL named "at.dog".
        raise CheckpointError(
            f"{path} is not a PyTorch checkpoint ({_describe_bytes(data)}).",
            "give the .pth/.pt file torch.save wrote (a zip archive, or a pickle from PyTorch before 1.6) or a .safetensors file",
        )

    _refuse_allocations(path, data, archive)
    try:
        obj = quiet_torch_load(data, weights_only=True)
    except Exception as exc:  # every reader error below becomes one clear message
        message = str(exc)
        if not any(s in message for s in ("Weights only load failed", "Unsupported global", "Unsupported operand", "persistent_load")):
            raise not_a_checkpoint(path, exc) from None
        allowed = user_classes(extra_classes, extra_modules)
        needed = needed_globals(data, archive, path)
        if not needed:  # no class references at all: not a pickled model, just bytes
            raise not_a_checkpoint(path, exc) from None
        classes = {name: numpy_data(name) or allowed_class(name, allowed) for name in needed}
        refused = [name for name, cls in classes.items() if cls is None]
        unsafe = unsafe_user_classes(extra_classes, extra_modules)
        if any(name in unsafe for name in refused):  # the --model file's class itself subclasses a gadget
            name = next(name for name in refused if name in unsafe)
            raise CheckpointError(f"{path}: refusing {name}: it subclasses {unsafe[name]}, which --trust-code does not admit.", MALICIOUS_FIX) from None
        if refused:  # by name, with or without trust: no model checkpoint needs these
            raise refusal(path, *refused) from None
        model_classes = [name for name in needed if not numpy_data(name)]
        if model_classes and not trust_code:
            shown = ", ".join([n for n in model_classes if not n.startswith(TRUSTED_PACKAGES)][:3] or model_classes[:3])
            raise CheckpointError(
                f"{path} holds a whole pickled model ({shown}); loading it runs those classes' code on data from the file.",
                f"if you trust the file, add --trust-code (and --model FILE.py:Class if its class is your own). {TRUST_RUNS}",
            )
        obj = load_allowlisted(path, data, archive, classes)
        fmt = "pickled" if trust_code else None
    else:
        # torch's reader builds only data, but BUILD may still set attributes on a dict it made
        # (an OrderedDict whose ``items`` is an int): the same check as for trusted files.
        check_loaded(path, obj, ())
        fmt = None
    return _normalise(path, sha, obj, fmt)


# Globals torch's weights_only reader admits that allocate what the file asks for, not what it
# holds: bytearray(1500000000) is 936 bytes of pickle. No checkpoint of ours needs them.
ALLOCATING_GLOBALS = frozenset({"builtins.bytearray"})


def _refuse_allocations(path: Path, data: bytes, archive) -> None:
    """CheckpointError when the pickle names a global that allocates memory on its say."""
    try:
        named = named_globals(data, archive, path)
    except CheckpointError:
        raise
    except Exception:  # the scan could not read it: the loader below reports what is wrong
        return
    for name in sorted(named & ALLOCATING_GLOBALS):
        raise CheckpointError(f"{path}: refusing {name}: it allocates as much memory as the file asks for, and no model checkpoint needs it.",
                              "save the weights as a state_dict: torch.save(model.state_dict(), PATH)")


MAX_ARCHIVE_MEMBERS = 100_000


def _check_archive(path: Path, archive: zipfile.ZipFile, size: int) -> None:
    """Refuse a zip whose records would unpack to far more than the file holds.

    torch.save stores its records uncompressed, so together they are about the file's size; a
    1.5 MB file whose deflated record unpacks to 1.5 GB (a decompression bomb) is not one.
    """
    infos = archive.infolist()
    unpacked = sum(info.file_size for info in infos)
    if len(infos) > MAX_ARCHIVE_MEMBERS or unpacked > 2 * size + (1 << 20):
        raise CheckpointError(
            f"{path}: its {len(infos)} zip records unpack to {unpacked:,} bytes from a {size:,}-byte file, which torch.save never writes.",
            "this file is not a plain torch.save checkpoint and may be hostile: get the weights from a trusted source",
        )


def _open_zip(data: bytes) -> zipfile.ZipFile | None:
    try:
        return zipfile.ZipFile(io.BytesIO(data)) if data[:2] == b"PK" else None
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        return None


def _looks_like_safetensors(data: bytes) -> bool:
    """A little-endian u64 header length that fits the file, then '{'."""
    return len(data) >= 9 and data[8:9] == b"{" and 8 + int.from_bytes(data[:8], "little") <= len(data)


def _load_torchscript(path: Path, sha: str, data: bytes, archive: zipfile.ZipFile, trust_code: bool) -> Checkpoint:
    torch = _torch()
    if not trust_code:
        state_dict, stripped = _strip_prefixes(torchscript_tensors(path, data, archive))
        if not state_dict:
            raise CheckpointError(f"{path} is a TorchScript archive without readable weights.", "if you trust the file, add --trust-code")
        return Checkpoint(path, sha, "torchscript", state_dict, stripped_prefixes=stripped, info={"code": "not run (weights read only)"})
    try:
        module = torch.jit.load(io.BytesIO(data), map_location="cpu")
    except Exception as exc:
        raise CheckpointError(f"{path} looks like a TorchScript archive but cannot be loaded ({str(exc).splitlines()[0][:150]}).", "re-save it with torch.jit.save") from None
    state_dict, stripped = _strip_prefixes(dict(module.state_dict()))
    return Checkpoint(path, sha, "torchscript", state_dict, module=module.eval(), stripped_prefixes=stripped, info={"code": "run (--trust-code)"})


def _load_safetensors(path: Path, data: bytes) -> dict:
    """The file's tensors as a state_dict, with its string metadata (if any) beside them."""
    try:
        from safetensors import SafetensorError
        from safetensors.torch import load
    except ImportError:
        raise DependencyError(f"{path} is a safetensors file, and reading it needs the safetensors package.", "pip install 'alexnet-deploy[safetensors]'") from None
    try:
        state_dict = load(data)
        header = json.loads(data[8:8 + int.from_bytes(data[:8], "little")])
        metadata = header.get("__metadata__") or {} if isinstance(header, dict) else {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file ({str(exc).splitlines()[0][:120]}).", "check that it was written completely (safetensors.torch.save_file)") from None
    if metadata:  # read like a torch.save wrapper dict, so labels ("classes": JSON list) and info come through
        return {**{k: _json_or_text(v) for k, v in metadata.items()}, "state_dict": state_dict}
    return state_dict


def _json_or_text(value: str):
    try:
        return json.loads(value)
    except (ValueError, RecursionError):  # RecursionError: "[[[[..." nested past the parser's depth
        return value


def _describe_bytes(data: bytes) -> str:
    """What a file that is not a checkpoint looks like, for the error message."""
    if data[:1] == b"\x08":
        return "it looks like an ONNX model"
    if data[:2] == b"PK":
        return "it starts like torch.save's zip archive, but the archive is truncated or damaged: copy the file again"
    try:
        text = data[:4096].decode("utf-8")
    except UnicodeDecodeError:
        return f"it starts with the bytes {data[:8].hex(' ')}"
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return f"it is a text file starting {first[:40]!r}" if first else "it is a text file"


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
    _check_dense_real(path, state_dict)
    return Checkpoint(path, sha, fmt, state_dict, module, wrapper_key, stripped, info, labels)


def _check_dense_real(path: Path, state_dict: dict) -> None:
    """Weights an AlexNet can use: dense, not quantized, real (a complex weight would be cast silently),
    and stored whole: a view larger than its storage (``zeros(1).expand(N, 4096)``) would make a
    few bytes of file build a model of any size."""
    for name, tensor in state_dict.items():
        kind = "sparse" if tensor.layout != _torch().strided else "quantized" if tensor.is_quantized else "complex" if tensor.is_complex() else None
        if kind:
            raise CheckpointError(
                f"{path}: weight {name} is a {kind} tensor; AlexNet's layers take dense real float weights.",
                "save the float model's state_dict (dequantize / to_dense first)",
            )
        stored = tensor.untyped_storage().nbytes() // max(1, tensor.element_size())
        if tensor.numel() > stored:
            raise CheckpointError(
                f"{path}: weight {name} is a view of {tensor.numel()} elements over a storage of {stored}; a checkpoint's weights are stored whole.",
                "save contiguous weights: torch.save({k: v.contiguous() for k, v in model.state_dict().items()}, PATH)",
            )
