"""Pickled models: which globals a pickle names (found without running it), and which of them may load.

Even with ``--trust-code`` a pickle may only name ``nn.Module`` classes from torch, torchvision
or the user's ``--model`` file (and numpy data); every other global is refused by name. Zip
checkpoints load through ``torch.load(weights_only=True)`` under ``safe_globals``; pre-1.6 files
through a restricted unpickler that admits exactly the same names.
"""

from __future__ import annotations

import inspect
import io
import pickle
import pickletools
import sys
import zipfile
from pathlib import Path

from alexnet_deploy.errors import CheckpointError

# Where a pickled model's classes may come from when the user trusts the file.
TRUSTED_PACKAGES = ("torch", "torchvision")
REFUSED_HOW = "not an nn.Module class from torch, torchvision or --model"


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


def path_hint(archive: zipfile.ZipFile) -> str:
    """The checkpoint's name for messages (the archive was opened from bytes)."""
    names = archive.namelist()
    return f"the archive {names[0].split('/')[0]!r}" if names else "the archive"


def needed_globals(data: bytes, archive: zipfile.ZipFile | None, path: Path | None = None) -> list[str]:
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
                try:
                    record = archive.read(info)
                except (zipfile.BadZipFile, NotImplementedError, OSError, EOFError) as exc:  # bad CRC, unknown compression
                    raise CheckpointError(f"{path or path_hint(archive)}: zip record {info.filename} cannot be read ({exc}).", "copy the file again, or re-save it with torch.save") from None
                names.update(_pickle_globals(record))
    else:
        names.update(_pickle_globals(data))
    default = set(wou._get_allowed_globals())
    return sorted(n for n in names if n not in default)


def user_classes(extra_classes: dict | None, extra_modules: dict | None) -> dict:
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


def numpy_data(name: str):
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


def allowed_class(name: str, allowed: dict):
    """The class ``name`` stands for if it is an nn.Module class from torch, torchvision or --model; else None."""
    import importlib

    import torch

    if name in allowed:
        return allowed[name]
    parts = name.split(".")
    if parts[0] not in TRUSTED_PACKAGES or "__main__" in parts:
        return None
    # Only modules already imported: a name in the file must not make us import a torch or
    # torchvision module whose import-time code runs (some test helpers patch torch on import).
    # torchvision.models is imported here so its model classes can be found.
    try:
        importlib.import_module("torchvision.models")
    except ImportError:
        pass
    for cut in range(len(parts) - 1, 0, -1):  # longest imported module prefix, then attributes
        value = sys.modules.get(".".join(parts[:cut]))
        if value is None:
            continue
        for attr in parts[cut:]:
            value = getattr(value, attr, None)
        # The canonical name must be the one asked for: `torch.os.system` or a re-export is not a class of torch.
        if inspect.isclass(value) and issubclass(value, torch.nn.Module) and f"{value.__module__}.{value.__qualname__}" == name:
            return value
        return None
    return None


def refusal(path: Path, *names: str) -> CheckpointError:
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
                raise refusal(path, full)
            return allowed[full]

    def load(file, **kwargs):
        return Unpickler(file, **kwargs).load()

    return SimpleNamespace(Unpickler=Unpickler, load=load, __name__="alexnet_restricted_pickle")


def quiet_torch_load(data: bytes, **kwargs):
    """torch.load from bytes on the CPU, without the UserWarnings it prints about a file's
    storages or sparse tensors: the toolkit reports problems as one-line errors instead."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.load(io.BytesIO(data), map_location="cpu", **kwargs)


def load_allowlisted(path: Path, data: bytes, archive, classes: dict):
    """Load a trusted whole model, admitting only the allowlisted classes."""
    import re

    import torch

    admitted = [(cls, name) for name, cls in classes.items()]
    if any(name.startswith("numpy.") for name in classes):
        # np.dtype(...) returns an instance of a per-type class (Float64DType) that the scan cannot see.
        import numpy as np

        admitted += [(v, f"numpy.dtypes.{k}") for k, v in vars(np.dtypes).items() if numpy_data(f"numpy.dtypes.{k}")]
    try:
        if archive is not None or all(numpy_data(name) for name in classes):
            # torch's weights_only reader (pre-1.6 files too): it also refuses BUILD on what it
            # did not build, which a plain Unpickler allows (setting attributes of any class).
            with torch.serialization.safe_globals(admitted):
                return quiet_torch_load(data, weights_only=True)
        # A trusted pre-1.6 whole model: its classes come as persistent ids, which weights_only
        # refuses. weights_only=False only hands the file to the restricted unpickler above,
        # which resolves only the allowlisted names (BUILD on them is what trusting the file allows).
        return quiet_torch_load(data, weights_only=False, pickle_module=_restricted_pickle_module(path, classes))
    except CheckpointError:
        raise
    except Exception as exc:
        text = str(exc)
        named = re.search(r"GLOBAL (\S+)", text)  # a global the static scan did not see
        if named:
            raise refusal(path, named.group(1)) from None
        if "Unsupported operand" in text or "persistent_load" in text:
            raise CheckpointError(
                f"{path} is a pickled model that cannot be loaded without running arbitrary code ({text.splitlines()[0][:120]}).",
                "re-save it as a state_dict: torch.save(model.state_dict(), PATH)",
            ) from None
        raise not_a_checkpoint(path, exc) from None


def not_a_checkpoint(path: Path, exc: BaseException) -> CheckpointError:
    reason = {EOFError: "the file ends early"}.get(type(exc))
    if reason is None:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "central directory" in text or "zip archive" in text:
            reason = "the zip archive is truncated or damaged"
        else:
            reason = f"{type(exc).__name__}: {text[:100]}"
    return CheckpointError(f"{path} is not a readable PyTorch checkpoint ({reason}).", "check that the file was saved with torch.save and copied completely")
