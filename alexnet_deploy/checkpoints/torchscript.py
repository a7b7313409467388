"""TorchScript archives: their weights read without running their program.

``torch.jit.load`` compiles the archive's code and runs its ``__setstate__`` (there is no safe
mode: pytorch#143403). Without ``--trust-code`` the toolkit reads ``data.pkl`` with a restricted
unpickler that only builds tensors, dicts and stand-ins for the scripted classes.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path
from typing import Any

from alexnet_deploy.errors import CheckpointError


def is_torchscript(archive: zipfile.ZipFile) -> bool:
    # torch.load treats an archive with a constants.pkl record as TorchScript; code/ is the program.
    return any(n.endswith("constants.pkl") or "/code/" in n for n in archive.namelist())


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


_CLONE_LIMIT = 2  # tensors may hold at most this many times the storage bytes (tied weights repeat a few)


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
        numel = 1
        for extent in size:
            numel *= extent
        # A view larger than its storage (stride 0, overlapping strides) would be cloned into
        # memory the file never paid for: a 2 KB archive could ask for gigabytes.
        if numel > storage.numel() or offset < 0 or any(v < 0 for v in (*size, *stride)):
            raise pickle.UnpicklingError(f"a tensor of {numel} elements over a storage of {storage.numel()}")
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
        held = sum(storage.numel() * storage.element_size() for storage in storages.values())
        cloned = 0
        todo = [("", root)]
        seen: set[int] = set()  # a module's state may refer back to itself: walk each object once
        while todo:
            name, obj = todo.pop()
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            if isinstance(obj, torch.Tensor):
                # Each tensor fits its storage, but many may view the same one, and each is
                # cloned: a 1 MB pickle could ask for 80,000 copies. Tied weights share a little.
                cloned += obj.numel() * obj.element_size()
                if cloned > _CLONE_LIMIT * held:
                    raise pickle.UnpicklingError(f"its tensors ask for {cloned} bytes, over {_CLONE_LIMIT}x the {held} bytes of storage the file holds")
                out[name] = obj.clone()  # own memory, not a view into the file's bytes
            elif isinstance(obj, _ScriptObject) and isinstance(obj.state, dict):
                todo += [(f"{name}.{k}" if name else str(k), v) for k, v in obj.state.items()]
    except Exception as exc:
        raise CheckpointError(
            f"{path} is a TorchScript archive whose weights cannot be read without running its code ({str(exc).splitlines()[0][:120]}).",
            "if you trust the file, add --trust-code; else re-save the weights with torch.save(model.state_dict(), PATH)",
        ) from None
    return dict(sorted(out.items()))
