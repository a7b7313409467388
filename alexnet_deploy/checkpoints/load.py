"""Reading checkpoints in every format people save them, safely by default.

Handles a bare state_dict; a dict wrapping one beside optimizer/epoch/metrics; the
``module.`` (DataParallel/DDP) and ``_orig_mod.`` (torch.compile) prefixes; GPU tensors
(loaded on the CPU); TorchScript archives; legacy (pre-1.6) files; safetensors files
(with the optional ``safetensors`` package); and a whole pickled ``nn.Module``.

Nothing from the file runs unless the caller passes ``trust_code=True`` (``--trust-code``):
TorchScript weights are then read by a restricted unpickler that only builds tensors, and
pickles go through ``torch.load(weights_only=True)``. Even with trust, a pickle may only name
``nn.Module`` classes from torch, torchvision or the user's ``--model`` file; anything else is
refused by name. The file is read once: the bytes hashed are the bytes checked and loaded.
"""

from __future__ import annotations

import hashlib
import inspect
import io
import json
import pickle
import pickletools
import sys
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from alexnet_deploy.errors import CheckpointError, DependencyError
from alexnet_deploy.onnx_file import check_input_file

# Keys under which training scripts store the weights, most specific first.
WRAPPER_KEYS = (
    "state_dict", "model_state_dict", "model_state", "model", "net", "network",
    "net_state_dict", "weights", "params", "module", "ema", "model_ema",
)
# Keys that may carry labels next to the weights.
LABEL_KEYS = ("classes", "class_names", "labels", "idx_to_class", "class_to_idx")
STRIPPED_PREFIXES = ("module.", "_orig_mod.")
# Where a pickled model's classes may come from when the user trusts the file.
TRUSTED_PACKAGES = ("torch", "torchvision")
REFUSED_HOW = "not an nn.Module class from torch, torchvision or --model"


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
    torch = _torch()
    # One read: what is hashed (and recorded in the ONNX metadata) is what is checked and loaded.
    data = path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()

    if _looks_like_safetensors(data) or path.suffix.lower() == ".safetensors":  # by name too, so a damaged one says so
        return replace(_normalise(path, sha, _load_safetensors(path, data), None), format="safetensors")

    archive = _open_zip(data)
    if archive is not None and _is_torchscript(archive):
        return _load_torchscript(path, sha, data, archive, trust_code)
    if archive is None and not (len(data) >= 2 and data[0] == 0x80 and 2 <= data[1] <= 5):
        # Neither torch.save's zip nor a pre-1.6 pickle: do not hand it to an unpickler, whose
        # opcodes would read a text file such as "cat\ndog" as a GLOBAL named "at.dog".
        raise CheckpointError(
            f"{path} is not a PyTorch checkpoint ({_describe_bytes(data)}).",
            "give the .pth/.pt file torch.save wrote (a zip archive, or a pickle from PyTorch before 1.6) or a .safetensors file",
        )

    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # every reader error below becomes one clear message
        message = str(exc)
        if not any(s in message for s in ("Weights only load failed", "Unsupported global", "Unsupported operand", "persistent_load")):
            raise _not_a_checkpoint(path, exc) from None
        allowed = _user_classes(extra_classes, extra_modules)
        needed = _needed_globals(data, archive)
        if not needed:  # no class references at all: not a pickled model, just bytes
            raise _not_a_checkpoint(path, exc) from None
        classes = {name: _numpy_data(name) or _allowed_class(name, allowed) for name in needed}
        refused = [name for name, cls in classes.items() if cls is None]
        if refused:  # by name, with or without trust: no model checkpoint needs these
            raise _refusal(path, *refused) from None
        model_classes = [name for name in needed if not _numpy_data(name)]
        if model_classes and not trust_code:
            shown = ", ".join([n for n in model_classes if not n.startswith(TRUSTED_PACKAGES)][:3] or model_classes[:3])
            raise CheckpointError(
                f"{path} holds a whole pickled model ({shown}); loading it runs those classes' code on data from the file.",
                "if you trust the file, add --trust-code (and --model FILE.py:Class if its class is your own)",
            )
        obj = _load_allowlisted(path, data, archive, classes)
        fmt = "pickled" if trust_code else None
    else:
        fmt = None
    return _normalise(path, sha, obj, fmt)


def _open_zip(data: bytes) -> zipfile.ZipFile | None:
    try:
        return zipfile.ZipFile(io.BytesIO(data)) if data[:2] == b"PK" else None
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        return None


def _is_torchscript(archive: zipfile.ZipFile) -> bool:
    # torch.load treats an archive with a constants.pkl record as TorchScript; code/ is the program.
    return any(n.endswith("constants.pkl") or "/code/" in n for n in archive.namelist())


def _looks_like_safetensors(data: bytes) -> bool:
    """A little-endian u64 header length that fits the file, then '{'."""
    return len(data) >= 9 and data[8:9] == b"{" and 8 + int.from_bytes(data[:8], "little") <= len(data)


# ---- pickled models: which globals they name, and which of those may load ----------------------

def _pickle_globals(data: bytes) -> list[str]:
    """Every module.name a pickle stream names (GLOBAL, INST, STACK_GLOBAL via the memo), without running it.

    Scans pickle after pickle, as legacy (pre-1.6) files hold five in a row. Only used to
    name what a file wants; the loaders enforce the allowlist themselves.
    """
    found: list[str] = []
    stream = io.BytesIO(data)
    while stream.tell() < len(data):
        memo: dict = {}
        recent: list = []  # strings pushed lately (or None), enough to name a STACK_GLOBAL
        try:
            for opcode, arg, _ in pickletools.genops(stream):
                name = opcode.name
                if name in ("GLOBAL", "INST"):
                    found.append(_python3_name(*str(arg).split(" ", 1)))
                elif name == "STACK_GLOBAL":
                    module, attr = (recent[-2], recent[-1]) if len(recent) >= 2 else (None, None)
                    found.append(f"{module}.{attr}" if isinstance(module, str) and isinstance(attr, str) else "<a computed global>")
                    recent = recent[:-2]
                elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                    memo[arg] = recent[-1] if recent else None
                elif name == "MEMOIZE":
                    memo[len(memo)] = recent[-1] if recent else None
                elif name in ("GET", "BINGET", "LONG_BINGET"):
                    recent.append(memo.get(arg))
                elif "UNICODE" in name or "STRING" in name:
                    recent.append(arg if isinstance(arg, str) else None)
                elif name not in ("FRAME", "PROTO"):
                    recent.append(None)
        except Exception:
            break  # raw tensor bytes after the last pickle, or a damaged one: report what was seen
    return sorted(set(found))


def _python3_name(module: str, name: str) -> str:
    """module.name as Python 3 (and torch's weights_only reader) sees it: protocol 2 says __builtin__.set."""
    from _compat_pickle import IMPORT_MAPPING, NAME_MAPPING

    if (module, name) in NAME_MAPPING:
        module, name = NAME_MAPPING[(module, name)]
    elif module in IMPORT_MAPPING:
        module = IMPORT_MAPPING[module]
    return f"{module}.{name}"


def _needed_globals(data: bytes, archive: zipfile.ZipFile | None) -> list[str]:
    """Globals outside weights_only's default allowlist that the file names, sorted."""
    from torch import _weights_only_unpickler as wou
    from torch.serialization import get_unsafe_globals_in_checkpoint

    names: set[str] = set()
    if archive is not None:
        try:  # PyTorch's own scan of the record torch.load reads
            names.update(get_unsafe_globals_in_checkpoint(io.BytesIO(data)))
        except Exception:
            pass  # opcodes it does not know (STACK_GLOBAL): the scan below names them
        for info in archive.infolist():  # every pickle in the archive, so a decoy record hides nothing
            if info.filename.endswith(".pkl") and info.file_size <= len(data):
                names.update(_pickle_globals(archive.read(info)))
    else:
        names.update(_pickle_globals(data))
    default = set(wou._get_allowed_globals())
    return sorted(n for n in names if n not in default)


def _user_classes(extra_classes: dict | None, extra_modules: dict | None) -> dict:
    """Qualified name -> class for the nn.Module classes of the user's --model file."""
    import torch

    allowed = {f"__main__.{name}": cls for name, cls in (extra_classes or {}).items()}
    for alias, module in (extra_modules or {}).items():
        for name, value in vars(module).items():
            if inspect.isclass(value) and issubclass(value, torch.nn.Module):
                for qualified in (f"__main__.{name}", f"{alias}.{name}", f"{value.__module__}.{value.__qualname__}"):
                    allowed.setdefault(qualified, value)
    return allowed


# numpy arrays and scalars (metrics beside the weights: "best_acc": np.float64(...)) are data:
# rebuilding them calls no code named by the file.
NUMPY_DATA = (
    "numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct", "numpy.core.multiarray.scalar",
    "numpy._core.multiarray.scalar", "numpy.ndarray", "numpy.dtype",
)


def _numpy_data(name: str):
    """The numpy data constructor or dtype class ``name`` stands for, else None."""
    if name not in NUMPY_DATA and not name.startswith("numpy.dtypes."):
        return None
    try:
        import numpy as np
    except ImportError:
        return None
    if name.startswith("numpy.dtypes."):
        value = getattr(np.dtypes, name.rpartition(".")[2], None)
        # dtype classes of plain numbers only: an object dtype would hold arbitrary objects
        return value if inspect.isclass(value) and issubclass(value, np.dtype) and value is not getattr(np.dtypes, "ObjectDType", None) else None
    core = getattr(np, "_core", None) or np.core
    return {"_reconstruct": core.multiarray._reconstruct, "scalar": core.multiarray.scalar, "ndarray": np.ndarray, "dtype": np.dtype}[name.rpartition(".")[2]]


def _allowed_class(name: str, allowed: dict):
    """The class ``name`` stands for if it is an nn.Module class from torch, torchvision or --model; else None."""
    import importlib

    import torch

    if name in allowed:
        return allowed[name]
    parts = name.split(".")
    if parts[0] not in TRUSTED_PACKAGES or "__main__" in parts:
        return None
    for cut in range(len(parts) - 1, 0, -1):  # longest importable module prefix, then attributes
        try:
            value = importlib.import_module(".".join(parts[:cut]))
        except Exception:
            continue
        for attr in parts[cut:]:
            value = getattr(value, attr, None)
        # The canonical name must be the one asked for: `torch.os.system` or a re-export is not a class of torch.
        if inspect.isclass(value) and issubclass(value, torch.nn.Module) and f"{value.__module__}.{value.__qualname__}" == name:
            return value
        return None
    return None


def _refusal(path: Path, *names: str) -> CheckpointError:
    def user_class(name: str) -> bool:  # looks like the user's own model class rather than a library function
        module, _, attr = name.rpartition(".")
        root = module.split(".")[0]
        return attr[:1].isupper() and (root == "__main__" or (root not in sys.stdlib_module_names and root not in TRUSTED_PACKAGES and not root.startswith("_")))

    malicious = [n for n in names if not user_class(n)]
    if malicious:
        fix = "this file may be malicious: do not load it; get the weights as a state_dict from a trusted source"
    else:
        fix = f"if {names[0]} is your model's class and you trust the file, pass --trust-code --model FILE.py:{names[0].rpartition('.')[2]}"
    shown = ", ".join((malicious or list(names))[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
    return CheckpointError(f"{path}: refusing {shown}: {REFUSED_HOW}.", fix)


def _restricted_pickle_module(path: Path, classes: dict):
    """A ``pickle_module`` for torch.load whose unpickler resolves only allowlisted names.

    Legacy (pre-1.6) whole models store their classes as persistent ids, which
    weights_only refuses; this unpickler admits exactly the same globals instead.
    """
    from types import SimpleNamespace

    from torch import _weights_only_unpickler as wou

    allowed = {**wou._get_allowed_globals(), **classes}

    class Unpickler(pickle.Unpickler):
        def find_class(self, module, name):  # the only way a pickle reaches a callable
            full = _python3_name(module, name)
            if full not in allowed:
                raise _refusal(path, full)
            return allowed[full]

    def load(file, **kwargs):
        return Unpickler(file, **kwargs).load()

    return SimpleNamespace(Unpickler=Unpickler, load=load, __name__="alexnet_restricted_pickle")


def _load_allowlisted(path: Path, data: bytes, archive, classes: dict):
    """Load a trusted whole model, admitting only the allowlisted classes."""
    import re

    import torch

    admitted = [(cls, name) for name, cls in classes.items()]
    if any(name.startswith("numpy.") for name in classes):
        # np.dtype(...) returns an instance of a per-type class (Float64DType) that the scan cannot see.
        import numpy as np

        admitted += [(v, f"numpy.dtypes.{k}") for k, v in vars(np.dtypes).items() if _numpy_data(f"numpy.dtypes.{k}")]
    try:
        if archive is not None:
            with torch.serialization.safe_globals(admitted):
                return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        # weights_only=False only hands the file to the restricted unpickler above.
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=False, pickle_module=_restricted_pickle_module(path, classes))
    except CheckpointError:
        raise
    except Exception as exc:
        text = str(exc)
        named = re.search(r"GLOBAL (\S+)", text)  # a global the static scan did not see
        if named:
            raise _refusal(path, named.group(1)) from None
        if "Unsupported operand" in text or "persistent_load" in text:
            raise CheckpointError(
                f"{path} is a pickled model that cannot be loaded without running arbitrary code ({text.splitlines()[0][:120]}).",
                "re-save it as a state_dict: torch.save(model.state_dict(), PATH)",
            ) from None
        raise _not_a_checkpoint(path, exc) from None


# ---- TorchScript: weights without running the program, or the program with trust ---------------

_TS_DTYPES = {
    "FloatStorage": "float32", "HalfStorage": "float16", "BFloat16Storage": "bfloat16", "DoubleStorage": "float64",
    "LongStorage": "int64", "IntStorage": "int32", "ShortStorage": "int16", "ByteStorage": "uint8",
    "CharStorage": "int8", "BoolStorage": "bool",
}
_TS_DATA = ("build_intlist", "build_doublelist", "build_boollist", "build_tensorlist", "restore_type_tag")


class _ScriptObject:
    """Stand-in for a ``__torch__.*`` class: keeps its state, never runs its code."""

    state = None

    def __setstate__(self, state):
        self.state = state


def torchscript_tensors(path: Path, data: bytes, archive: zipfile.ZipFile) -> dict:
    """The named tensors of a TorchScript archive, read without running anything from it.

    The archive is untrusted input: members must be stored within the file's own size,
    tensors must lie inside their storage, and only tensor-building names resolve.
    """
    import torch

    names = archive.namelist()
    prefix = names[0].split("/")[0] if names else ""
    sizes = {info.filename: info.file_size for info in archive.infolist()}
    stubs: dict[str, type] = {}
    storages: dict[str, Any] = {}

    def read(member: str) -> bytes:
        if member not in sizes:
            raise pickle.UnpicklingError(f"missing record {member}")
        if sizes[member] > len(data):  # a compressed bomb: stored records are never larger than the file
            raise pickle.UnpicklingError(f"record {member} claims {sizes[member]} bytes")
        return archive.read(member)

    def rebuild(storage, offset, size, stride, *_):
        if not (isinstance(storage, torch.Tensor) and isinstance(offset, int) and all(isinstance(v, int) for v in (*size, *stride))):
            raise pickle.UnpicklingError("malformed tensor record")
        return torch.as_strided(storage, tuple(size), tuple(stride), offset)  # torch checks the bounds

    class Reader(pickle.Unpickler):
        def find_class(self, module, name):
            if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
                return rebuild
            if module == "torch" and name in _TS_DTYPES:
                return getattr(torch, _TS_DTYPES[name])
            if (module, name) == ("collections", "OrderedDict"):
                import collections

                return collections.OrderedDict
            if module == "torch.jit._pickle" and name in _TS_DATA:
                return lambda value, *_: value
            if module.startswith("__torch__"):
                return stubs.setdefault(f"{module}.{name}", type(name, (_ScriptObject,), {}))
            raise pickle.UnpicklingError(f"refusing {module}.{name}")

        def persistent_load(self, pid):  # ('storage', dtype, key, location, numel)
            if not (isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage" and isinstance(pid[1], torch.dtype) and isinstance(pid[2], str)):
                raise pickle.UnpicklingError("unexpected persistent id")
            key = pid[2]
            if key not in storages:
                raw = bytearray(read(f"{prefix}/data/{key}"))
                itemsize = torch.empty(0, dtype=pid[1]).element_size()
                storages[key] = torch.frombuffer(raw, dtype=pid[1]) if len(raw) >= itemsize else torch.empty(0, dtype=pid[1])
            return storages[key]

    try:
        root = Reader(io.BytesIO(read(f"{prefix}/data.pkl"))).load()
        out: dict = {}
        todo = [("", root)]
        while todo:
            name, obj = todo.pop()
            if isinstance(obj, torch.Tensor):
                out[name] = obj.clone()  # own memory, not a view into the file's bytes
            elif isinstance(obj, _ScriptObject) and isinstance(obj.state, dict):
                todo += [(f"{name}.{k}" if name else str(k), v) for k, v in obj.state.items()]
    except Exception as exc:
        raise CheckpointError(
            f"{path} is a TorchScript archive whose weights cannot be read without running its code ({str(exc).splitlines()[0][:120]}).",
            "if you trust the file, add --trust-code; else re-save the weights with torch.save(model.state_dict(), PATH)",
        ) from None
    return dict(sorted(out.items()))


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
    except ValueError:
        return value


def _describe_bytes(data: bytes) -> str:
    """What a file that is not a checkpoint looks like, for the error message."""
    if data[:1] == b"\x08":
        return "it looks like an ONNX model"
    try:
        text = data[:4096].decode("utf-8")
    except UnicodeDecodeError:
        return f"it starts with the bytes {data[:8].hex(' ')}"
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return f"it is a text file starting {first[:40]!r}" if first else "it is a text file"


def _not_a_checkpoint(path: Path, exc: BaseException) -> CheckpointError:
    reason = {EOFError: "the file ends early"}.get(type(exc))
    if reason is None:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "central directory" in text or "zip archive" in text:
            reason = "the zip archive is truncated or damaged"
        else:
            reason = f"{type(exc).__name__}: {text[:100]}"
    return CheckpointError(f"{path} is not a readable PyTorch checkpoint ({reason}).", "check that the file was saved with torch.save and copied completely")


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
