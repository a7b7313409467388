"""Pickled models: which globals a pickle names (found without running it), and which of them may load.

Even with ``--trust-code`` a pickle may only name the classes an image classifier of our
layouts is built from (:func:`trusted_classes`: torch.nn layers, containers and a few
torchvision classifiers), the ``--model`` class and the ``nn.Module`` classes its file
declares, and numpy data; every other global is refused by name. Nothing under torch.fx,
torch.export, torch.jit or torch._C, nor anything that holds a graph or a callable, is ever
admitted; after loading, every module is checked to hold only weights, submodules and plain
settings (no hooks, no callables, nothing shadowing its methods). Zip checkpoints load
through ``torch.load(weights_only=True)`` under ``safe_globals``; pre-1.6 files through a
restricted unpickler that admits exactly the same names.
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

# The packages whose classes --trust-code may admit (only those in trusted_classes()).
TRUSTED_PACKAGES = ("torch", "torchvision")
REFUSED_HOW = "not a class --trust-code admits (torch.nn layers, torchvision classifiers, the --model file's classes)"
# What trusting a pickled model runs, in one line (messages and docs).
TRUST_RUNS = (
    "--trust-code runs the constructors and __setstate__ of torch.nn layers, torchvision classifiers "
    "and your --model file's classes on the file's data, and their forward at export"
)
MALICIOUS_FIX = (
    "this file may be malicious, and --trust-code does not load it either: "
    "get the weights as a state_dict (torch.save(model.state_dict(), PATH)) from a trusted source"
)

# The classes an image classifier of our layouts is built from: layers, activations, pooling,
# LRN, dropout, normalisation, padding and containers. Nothing lazy (their hooks are callables),
# nothing holding a graph, a callable or code (torch.fx, torch.export, torch.jit, torch._C).
TORCH_NN_CLASSES = (
    "Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d",
    "Linear", "Bilinear", "Identity", "Flatten", "Unflatten",
    "ReLU", "ReLU6", "LeakyReLU", "PReLU", "ELU", "CELU", "SELU", "GELU", "SiLU", "Mish",
    "Hardswish", "Hardsigmoid", "Hardtanh", "Sigmoid", "Tanh", "Softmax", "Softmax2d", "LogSoftmax",
    "MaxPool1d", "MaxPool2d", "MaxPool3d", "AvgPool1d", "AvgPool2d", "AvgPool3d",
    "AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveAvgPool3d",
    "AdaptiveMaxPool1d", "AdaptiveMaxPool2d", "AdaptiveMaxPool3d",
    "LocalResponseNorm", "CrossMapLRN2d", "BatchNorm1d", "BatchNorm2d", "BatchNorm3d",
    "GroupNorm", "LayerNorm", "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d",
    "Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout",
    "ZeroPad1d", "ZeroPad2d", "ConstantPad1d", "ConstantPad2d",
    "ReflectionPad1d", "ReflectionPad2d", "ReplicationPad1d", "ReplicationPad2d", "ChannelShuffle", "PixelShuffle",
    "Sequential", "ModuleList", "ModuleDict",
)
# torchvision's classifiers built only from the classes above, and their blocks (module, class).
TORCHVISION_CLASSES = (
    ("torchvision.models.alexnet", "AlexNet"), ("torchvision.models.vgg", "VGG"),
    ("torchvision.models.resnet", "ResNet"), ("torchvision.models.resnet", "BasicBlock"), ("torchvision.models.resnet", "Bottleneck"),
    ("torchvision.models.squeezenet", "SqueezeNet"), ("torchvision.models.squeezenet", "Fire"),
    ("torchvision.models.mobilenetv2", "MobileNetV2"), ("torchvision.models.mobilenetv2", "InvertedResidual"),
    ("torchvision.ops.misc", "Conv2dNormActivation"), ("torchvision.ops.misc", "MLP"),
)
_TRUSTED: dict = {}


def trusted_classes() -> dict:
    """Canonical ``module.qualname`` -> class, for every torch / torchvision class --trust-code admits.

    The --model class and its file's classes come on top (:func:`user_classes`). torchvision's
    entries are there only when torchvision is installed.
    """
    if not _TRUSTED:
        import importlib

        import torch

        found = [getattr(torch.nn, name) for name in TORCH_NN_CLASSES]
        for module, name in TORCHVISION_CLASSES:
            try:
                found.append(getattr(importlib.import_module(module), name))
            except Exception:  # torchvision missing (or broken): its classes are simply not admitted
                continue
        _TRUSTED.update({f"{cls.__module__}.{cls.__qualname__}": cls for cls in found})
    return dict(_TRUSTED)


def trusted_class_names() -> list[str]:
    """What --trust-code admits from torch and torchvision, sorted (for docs and messages)."""
    return sorted(trusted_classes())


def unsafe_base(cls) -> str | None:
    """The torch / torchvision base class that keeps ``cls`` out of the allowlist, if any.

    A class of the user's file is admitted when it is an nn.Module whose torch and torchvision
    bases are all admitted classes or their own bases (nn.Module, ``_ConvNd``): subclassing ``torch.fx.GraphModule``,
    ``torch.export.unflatten.InterpreterModule`` or ``torch.jit.ScriptModule`` would bring
    their code that runs a graph or program held in the file.
    """
    import torch

    if not (inspect.isclass(cls) and issubclass(cls, torch.nn.Module)):
        return f"{getattr(cls, '__module__', '?')}.{getattr(cls, '__qualname__', cls)}"
    trusted = {base for admitted in trusted_classes().values() for base in admitted.__mro__}
    for base in cls.__mro__:
        root = (base.__module__ or "").split(".")[0]
        if root in TRUSTED_PACKAGES and base not in trusted:
            return f"{base.__module__}.{base.__qualname__}"
    return None


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

    default = set(wou._get_allowed_globals())
    return sorted(n for n in named_globals(data, archive, path) if n not in default)


def named_globals(data: bytes, archive: zipfile.ZipFile | None, path: Path | None = None) -> set[str]:
    """Every global the file's pickles name (found without running them)."""
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
    return names


def user_classes(extra_classes: dict | None, extra_modules: dict | None) -> dict:
    """Qualified name -> class for the --model class and the nn.Module classes its file declares.

    Classes the file only imports are admitted under its names when they are trusted classes
    themselves (``from torch.nn import Linear``); a class with an untrusted torch base
    (:func:`unsafe_base`) is left out, whatever the file says.
    """
    import torch

    allowed = {f"__main__.{name}": cls for name, cls in (extra_classes or {}).items() if unsafe_base(cls) is None}
    trusted = set(trusted_classes().values())
    for alias, module in (extra_modules or {}).items():
        for name, value in vars(module).items():
            if not (inspect.isclass(value) and issubclass(value, torch.nn.Module)) or unsafe_base(value) is not None:
                continue
            if value.__module__ != module.__name__ and value not in trusted:
                continue  # imported into the file from elsewhere: not what the file declares
            for qualified in (f"__main__.{name}", f"{alias}.{name}", f"{value.__module__}.{value.__qualname__}"):
                allowed.setdefault(qualified, value)
    return allowed


def unsafe_user_classes(extra_classes: dict | None, extra_modules: dict | None) -> dict:
    """Qualified name -> the untrusted base, for the --model file's classes left out by :func:`user_classes`."""
    import torch

    found = {}
    for name, cls in (extra_classes or {}).items():
        if (base := unsafe_base(cls)) is not None:
            found[f"__main__.{name}"] = base
    for alias, module in (extra_modules or {}).items():
        for name, value in vars(module).items():
            if inspect.isclass(value) and issubclass(value, torch.nn.Module) and value.__module__ == module.__name__:
                if (base := unsafe_base(value)) is not None:
                    for qualified in (f"__main__.{name}", f"{alias}.{name}", f"{value.__module__}.{value.__qualname__}"):
                        found.setdefault(qualified, base)
    return found


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
    """The class ``name`` stands for if --trust-code admits it (:func:`trusted_classes` or ``allowed``, the
    --model file's classes); else None. Names are canonical: a re-export (``torch.nn.Linear``) is not one."""
    if name in allowed:
        return allowed[name]
    return trusted_classes().get(name)


def refusal(path: Path, *names: str) -> CheckpointError:
    """Refuse ``names`` by name. --trust-code is suggested only when every name looks like the user's
    own model class (which trust admits with --model); anything else is not loaded even with trust."""
    def user_class(name: str) -> bool:  # looks like the user's own model class rather than a library function
        module, _, attr = name.rpartition(".")
        root = module.split(".")[0]
        return attr[:1].isupper() and (root == "__main__" or (root not in sys.stdlib_module_names and root not in TRUSTED_PACKAGES and not root.startswith("_")))

    malicious = [n for n in names if not user_class(n)]
    if malicious:
        fix = MALICIOUS_FIX
    else:
        fix = f"if {names[0]} is your model's class and you trust the file, pass --trust-code --model FILE.py:{names[0].rpartition('.')[2]} ({TRUST_RUNS})"
    shown = ", ".join((malicious or list(names))[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
    return CheckpointError(f"{path}: refusing {shown}: {REFUSED_HOW}.", fix)


# Module attributes that hold hooks: a loaded model's must all be empty, as a file cannot hold a
# hook that is not a callable, and no callable from a file is run.
HOOK_DICTS = (
    "_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
    "_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_forward_pre_hooks_with_kwargs",
    "_state_dict_hooks", "_state_dict_pre_hooks", "_load_state_dict_pre_hooks", "_load_state_dict_post_hooks",
)


_MISSING = object()


def check_loaded(path: Path, obj, admitted) -> None:
    """Refuse a loaded pickle whose modules hold anything but weights, submodules and plain settings.

    An admitted class's state is the file's to choose: a hook dict holding a module (state_dict
    and forward call it), a class attribute shadowed by an instance one (``forward``,
    ``_compiled_call_impl``), a submodule outside ``_modules`` or a callable value would make
    our own calls run what the file chose. Walked before anything is called on the result.
    """
    import torch

    admitted = set(admitted)
    seen: set[int] = set()
    inside: set[int] = set()  # the modules being walked: one met again inside itself is a cycle

    def refuse(where: str, value) -> CheckpointError:
        kind = f"{type(value).__module__}.{type(value).__qualname__}" if not inspect.isclass(value) else f"the class {value.__module__}.{value.__qualname__}"
        return CheckpointError(
            f"{path}: refusing {where} ({kind}): a checkpoint may hold only weights, submodules and plain settings, not hooks or callables.",
            MALICIOUS_FIX,
        )

    def data(value, where: str, depth: int = 0) -> None:
        if depth > 200:
            raise refuse(where, value)
        if value is None or isinstance(value, (bool, int, float, complex, str, bytes, bytearray, torch.dtype, torch.device, torch.Size)):
            return
        if isinstance(value, torch.Tensor):
            if type(value) not in (torch.Tensor, torch.nn.Parameter) or value._backward_hooks:
                raise refuse(where, value)
            for key, item in vars(value).items():  # attributes set on a tensor (_rebuild_parameter_with_state)
                if hasattr(type(value), key) or isinstance(item, torch.nn.Module):
                    raise refuse(f"{where}.{key}", item)  # t.float() must stay Tensor.float
                data(item, f"{where}.{key}", depth + 1)
            return
        if isinstance(value, torch.nn.Module):
            module(value, where, depth)
            return
        if type(value).__module__ == "numpy" or type(value).__module__.startswith("numpy."):
            import numpy as np

            if isinstance(value, np.ndarray) and not value.dtype.hasobject or isinstance(value, np.generic) and not isinstance(value, np.object_):
                return
            if isinstance(value, np.dtype) and not value.hasobject:
                return
            raise refuse(where, value)
        if type(value) in (tuple, list, set, frozenset) or isinstance(value, dict) and type(value).__module__ in ("builtins", "collections"):
            if id(value) in seen:
                return
            seen.add(id(value))
            plain_container(value, where, depth)
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                data(key, where, depth + 1)
                data(item, f"{where}[{key!r}]", depth + 1)
            return
        raise refuse(where, value)

    def plain_container(value, where: str, depth: int = 0) -> None:
        # BUILD sets attributes on an OrderedDict: a state_dict's _metadata is data, but one named
        # ``values`` or ``items`` would replace the method we call
        for key, item in (getattr(value, "__dict__", None) or {}).items():
            if hasattr(type(value), key) or callable(item):
                raise refuse(f"{where}.{key}", item)
            data(item, f"{where}.{key}", depth + 1)

    def module(value, where: str, depth: int) -> None:
        cls = type(value)
        name = f"{cls.__module__}.{cls.__qualname__}"
        if cls not in admitted:
            raise refuse(where, value)
        if id(value) in inside:  # state_dict() and forward would recurse forever
            raise CheckpointError(f"{path}: refusing {where} ({name}): a module that contains itself.", MALICIOUS_FIX)
        if id(value) in seen:
            return
        seen.add(id(value))
        inside.add(id(value))
        try:
            _walk_module(value, where, depth, cls, name)
        finally:
            inside.discard(id(value))

    def _walk_module(value, where: str, depth: int, cls, name: str) -> None:
        for key, item in vars(value).items():
            here = f"{name}.{key}"
            if key in HOOK_DICTS:
                if not isinstance(item, dict) or item:
                    raise refuse(here, next(iter(item.values())) if isinstance(item, dict) else item)
                plain_container(item, here)
            elif key in ("_parameters", "_buffers", "_modules"):
                if not isinstance(item, dict):
                    raise refuse(here, item)
                plain_container(item, here)
                for sub, entry in item.items():
                    want = torch.nn.Module if key == "_modules" else torch.Tensor
                    if not isinstance(sub, str) or not (entry is None or isinstance(entry, want)):
                        raise refuse(f"{here}[{sub!r}]", entry)
                    data(entry, f"{where}.{sub}", depth + 1)
            else:
                shadowed = inspect.getattr_static(cls, key, _MISSING)
                if shadowed is not _MISSING and (callable(shadowed) or hasattr(type(shadowed), "__get__") or callable(item)):
                    raise refuse(here, item)  # an instance attribute in place of a method: forward, _compiled_call_impl, ...
                if inspect.isclass(item) and item in admitted:
                    continue  # a layer class kept for building more (ResNet's _norm_layer)
                if isinstance(item, torch.nn.Module):
                    raise refuse(here, item)  # submodules live in _modules; one outside it is not a layer
                data(item, here, depth + 1)

    data(obj, "the file's object")




def _restricted_pickle_module(path: Path, classes: dict):
    """A ``pickle_module`` for torch.load whose unpickler resolves only allowlisted names.

    Legacy (pre-1.6) whole models store their classes as persistent ids, which
    weights_only refuses; this unpickler admits exactly the same globals instead.
    """
    from types import SimpleNamespace

    from torch import _weights_only_unpickler as wou

    allowed = {**wou._get_allowed_globals(), **classes}

    class Unpickler(pickle._Unpickler):  # the Python unpickler: its BUILD can be checked
        dispatch = dict(pickle._Unpickler.dispatch)

        def find_class(self, module, name):  # the only way a pickle reaches a callable
            full = _python3_name(module, name)
            if full not in allowed:
                raise refusal(path, full)
            return allowed[full]

        def load_build(self):
            # BUILD sets state on the object below it: on a class, a module or a function that
            # is a process-wide change (Counter.update replaced for everyone); torch's own
            # weights_only reader refuses the same. Only objects the pickle made may get state.
            target = self.stack[-2]
            if inspect.isclass(target) or inspect.ismodule(target) or inspect.isroutine(target):
                named = f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', getattr(target, '__name__', target))}"
                raise CheckpointError(f"{path}: refusing a BUILD on {named}: a pickle may set state only on objects it made.", MALICIOUS_FIX)
            super().load_build()

        dispatch[pickle.BUILD[0]] = load_build

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
                loaded = quiet_torch_load(data, weights_only=True)
        else:
            # A trusted pre-1.6 whole model: its classes come as persistent ids, which weights_only
            # refuses. weights_only=False only hands the file to the restricted unpickler above,
            # which resolves only the allowlisted names (BUILD on them is what trusting the file allows).
            loaded = quiet_torch_load(data, weights_only=False, pickle_module=_restricted_pickle_module(path, classes))
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
    check_loaded(path, loaded, [cls for cls in classes.values() if inspect.isclass(cls) and issubclass(cls, torch.nn.Module)])
    return loaded


def not_a_checkpoint(path: Path, exc: BaseException) -> CheckpointError:
    reason = {EOFError: "the file ends early"}.get(type(exc))
    if reason is None:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "central directory" in text or "zip archive" in text:
            reason = "the zip archive is truncated or damaged"
        else:
            reason = f"{type(exc).__name__}: {text[:100]}"
    return CheckpointError(f"{path} is not a readable PyTorch checkpoint ({reason}).", "check that the file was saved with torch.save and copied completely")
