"""Checkpoint trust, unit by unit: which globals a pickle names, which may load, and the TorchScript reader.

Fast (no export), so mutation testing can run them per mutant. The references are
independent: hand-assembled pickle opcodes, the classes' own module and qualified names,
and ``torch.jit.load(...).state_dict()`` of a trusted archive.
"""

from __future__ import annotations

import collections
import io
import pickle
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from alexnet_deploy.checkpoints.pickles import (
    REFUSED_HOW, _pickle_globals, _restricted_pickle_module, allowed_class, needed_globals, numpy_data, refusal, user_classes,
)
from alexnet_deploy.checkpoints.torchscript import is_torchscript, torchscript_tensors
from alexnet_deploy.errors import CheckpointError
from pickle_bytes import global_ as _global, text as _text, zip_with_data_pkl  # tests/pickle_bytes.py


def _pickle(body: bytes) -> bytes:
    return b"\x80\x04" + body + b"."


# ---- which globals a pickle names --------------------------------------------------------------------

@pytest.mark.parametrize("body, names", [
    (_global("os", "system"), ["os.system"]),
    (b"i" + b"os\nsystem\n", ["os.system"]),  # INST (protocol 0)
    (_global("__builtin__", "set"), ["builtins.set"]),  # Python 2 names as Python 3 sees them
    (_global("copy_reg", "_reconstructor"), ["copyreg._reconstructor"]),
    (_global("UserDict", "UserDict"), ["collections.UserDict"]),
    (_text("os") + _text("system") + b"\x93", ["os.system"]),  # STACK_GLOBAL
    (b"\x8c\x02os" + b"\x8c\x06system" + b"\x93", ["os.system"]),  # SHORT_BINUNICODE
    (b"U\x02osU\x06system\x93", ["os.system"]),  # SHORT_BINSTRING: a str under protocol 0-2 strings
    (_text("os") + b"q\x05" + b"0" + _text("system") + b"r\x07\x00\x00\x00" + b"0" + b"h\x05j\x07\x00\x00\x00\x93", ["os.system"]),  # BINPUT/LONG_BINPUT, BINGET/LONG_BINGET
    (_text("os") + b"p3\n0" + _text("system") + b"p4\n0" + b"g3\ng4\n\x93", ["os.system"]),  # PUT/GET
    (_text("os") + b"\x94" + _text("nt") + b"0" + _text("system") + b"\x94" + b"0" + b"h\x00h\x01\x93", ["os.system"]),  # MEMOIZE counts memo entries
    (b"K\x01" + _text("system") + b"\x93", ["<a computed global>"]),
    (_text("os") + b"K\x01" + b"\x93", ["<a computed global>"]),
    (_text("system") + b"\x93", ["<a computed global>"]),
    (_text("os") + _text("system") + b"\x93" + _text("a") + b"\x93", ["<a computed global>", "os.system"]),  # consumed strings are gone
    (b"\x95\x10\x00\x00\x00\x00\x00\x00\x00" + _text("os") + _text("system") + b"\x93", ["os.system"]),  # FRAME
    (b"h\x09" + _text("system") + b"\x93", ["<a computed global>"]),  # an unknown memo key
])
def test_pickle_globals_hand_assembled(body, names):
    assert _pickle_globals(_pickle(body)) == names


def test_pickle_globals_reads_every_pickle_and_stops_at_raw_bytes():
    first = _pickle(_global("builtins", "int"))
    second = _pickle(_global("os", "system"))
    assert _pickle_globals(first + second) == ["builtins.int", "os.system"]
    assert _pickle_globals(second + b"\xff\x00raw tensor bytes") == ["os.system"]
    assert _pickle_globals(b"") == []


def test_pickle_globals_of_pythons_own_pickler():
    for protocol in range(0, pickle.HIGHEST_PROTOCOL + 1):
        data = pickle.dumps([collections.OrderedDict(), collections.Counter(), collections.OrderedDict()], protocol=protocol)
        assert {"collections.OrderedDict", "collections.Counter"} <= set(_pickle_globals(data)), protocol


def test_needed_globals_outside_torchs_default_allowlist():
    buffer = io.BytesIO()
    torch.save({"w": torch.zeros(2), "best": np.float64(0.5)}, buffer)
    data = buffer.getvalue()
    needed = needed_globals(data, zipfile.ZipFile(io.BytesIO(data)))
    assert "torch._utils._rebuild_tensor_v2" not in needed and "collections.OrderedDict" not in needed
    assert any(name.startswith("numpy.") and name.endswith("scalar") for name in needed), needed
    assert needed == sorted(needed)
    # a pickle outside the archive's data.pkl is scanned too; a bare (legacy) stream as a whole
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("archive/extra.pkl", _pickle(_global("os", "system")))
        for info in zipfile.ZipFile(io.BytesIO(data)).infolist():
            archive.writestr(info, zipfile.ZipFile(io.BytesIO(data)).read(info))
    assert "os.system" in needed_globals(out.getvalue(), zipfile.ZipFile(io.BytesIO(out.getvalue())))
    assert needed_globals(_pickle(_global("os", "system")) + _pickle(_global("collections", "OrderedDict")), None) == ["os.system"]


# ---- which may load ----------------------------------------------------------------------------------

def test_user_classes_are_the_nn_modules_of_the_model_file():
    class Net(torch.nn.Module):
        pass

    class Helper:
        pass

    module = types.ModuleType("mymodel")
    Net.__module__ = Helper.__module__ = "mymodel"  # declared in the file
    module.Net, module.Helper, module.helper = Net, Helper, lambda: None
    module.Linear = torch.nn.Linear  # imported into the file: admitted under the file's names and its own (a trusted class)
    module.GraphModule = torch.fx.GraphModule  # imported, and not a trusted class: never admitted
    allowed = user_classes({"Main": Net}, {"mymodel": module})
    assert allowed["__main__.Main"] is Net
    assert allowed["__main__.Net"] is Net and allowed["mymodel.Net"] is Net
    assert allowed[f"{Net.__module__}.{Net.__qualname__}"] is Net
    assert allowed["mymodel.Linear"] is torch.nn.Linear and allowed["torch.nn.modules.linear.Linear"] is torch.nn.Linear
    assert not any(value is Helper for value in allowed.values()) and "mymodel.helper" not in allowed
    assert "mymodel.GraphModule" not in allowed and torch.fx.GraphModule not in allowed.values()
    assert user_classes(None, None) == {}


def test_numpy_data_names_map_to_numpy_data_only():
    core = getattr(np, "_core", None) or np.core
    for prefix in ("numpy.core.multiarray", "numpy._core.multiarray"):
        assert numpy_data(f"{prefix}._reconstruct") is core.multiarray._reconstruct
        assert numpy_data(f"{prefix}.scalar") is core.multiarray.scalar
    assert numpy_data("numpy.ndarray") is np.ndarray and numpy_data("numpy.dtype") is np.dtype
    assert numpy_data("numpy.dtypes.Float64DType") is np.dtypes.Float64DType
    assert numpy_data("numpy.dtypes.Int8DType") is np.dtypes.Int8DType
    for name in ("numpy.dtypes.ObjectDType", "numpy.dtypes.NoSuch", "numpy.load", "numpy.core.multiarray.fromstring",
                 "numpy.testing.ndarray", "os.system", "numpy.dtypes.np"):
        assert numpy_data(name) is None, name


def test_allowed_class_admits_torch_and_torchvision_modules_by_their_canonical_name():
    from torchvision.models.alexnet import AlexNet
    from torchvision.ops import MLP

    assert allowed_class("torch.nn.modules.linear.Linear", {}) is torch.nn.Linear
    assert allowed_class("torch.nn.modules.container.Sequential", {}) is torch.nn.Sequential
    assert allowed_class("torchvision.models.alexnet.AlexNet", {}) is AlexNet
    assert allowed_class(f"{MLP.__module__}.{MLP.__qualname__}", {}) is MLP
    sentinel = object()
    assert allowed_class("mymodel.Net", {"mymodel.Net": sentinel}) is sentinel


@pytest.mark.parametrize("name", [
    "torch.nn.Linear",  # a re-export: not the canonical name
    "torch.os.system", "torch.load", "torch.Tensor", "torch.nn.modules.linear.NoSuch", "torch.nn.modules.linear",
    "torch.nn.modules.linear.Linear.forward", "torch.__main__.Net", "torchvision.__main__.Net",
    "builtins.eval", "os.system", "mymodel.Net", "torch", "torchaudio.models.Wav2Vec2Model", "numpy.ndarray",
    # nn.Module classes of torch that hold a graph, a program or callables: never admitted (issue 21)
    "torch.export.unflatten.InterpreterModule", "torch.fx.graph_module.GraphModule", "torch.jit._script.RecursiveScriptModule",
    "torch.nn.modules.module.Module", "torch.nn.modules.linear.LazyLinear",
])
def test_allowed_class_refuses_everything_else(name):
    assert allowed_class(name, {}) is None


def test_allowed_class_refuses_importable_modules_outside_torch_and_torchvision():
    """An nn.Module class importable by its canonical name, but not from torch or torchvision."""
    assert allowed_class(f"{_Mixed.__module__}.{_Mixed.__qualname__}", {}) is None


def test_refusal_names_the_globals_and_says_what_to_do():
    path = Path("evil.pth")
    malicious = refusal(path, "os.system")
    assert isinstance(malicious, CheckpointError)
    assert str(malicious).startswith(f"evil.pth: refusing os.system: {REFUSED_HOW}.")
    assert "may be malicious" in malicious.fix and "--trust-code does not load it" in malicious.fix
    for name in ("mymodel.Net", "__main__.Net", "a.b.MyNet"):
        error = refusal(path, name)
        assert "--trust-code --model FILE.py:" + name.rpartition(".")[2] in error.fix, name
        assert "--trust-code runs the constructors and __setstate__" in error.fix, name  # what trusting runs, in one line
    for name in ("collections.OrderedDict", "_pickle.Loads", "torch.nn.Evil", "mymodel.net", "builtins.Eval", "_evil.Payload",
                 "torch.export.unflatten.InterpreterModule", "torch.fx.graph_module.GraphModule"):
        assert "may be malicious" in refusal(path, name).fix and "pass --trust-code" not in refusal(path, name).fix, name
    mixed = refusal(path, "mymodel.Net", "os.system")
    assert "refusing os.system:" in str(mixed) and "mymodel.Net" not in str(mixed) and "may be malicious" in mixed.fix
    many = refusal(path, *[f"m{i}.f" for i in range(6)])
    assert "refusing m0.f, m1.f, m2.f, m3.f and 2 more:" in str(many)
    five = refusal(path, *[f"m{i}.f" for i in range(5)])
    assert "refusing m0.f, m1.f, m2.f, m3.f and 1 more:" in str(five)
    four = refusal(path, *[f"m{i}.f" for i in range(4)])
    assert "refusing m0.f, m1.f, m2.f, m3.f:" in str(four)


def test_restricted_unpickler_admits_exactly_the_allowlist():
    module = _restricted_pickle_module(Path("old.pth"), {"mymodel.Net": collections.Counter})
    assert module.__name__ == "alexnet_restricted_pickle"
    assert module.load(io.BytesIO(pickle.dumps(collections.OrderedDict(a=1), protocol=2))) == collections.OrderedDict(a=1)
    assert module.load(io.BytesIO(_pickle(_global("mymodel", "Net") + b")R"))) == collections.Counter()
    assert module.load(io.BytesIO(b"\x80\x02U\x01\xe9."), encoding="latin1") == "\xe9"  # a Python 2 str: torch passes encoding=
    assert module.load(io.BytesIO(_pickle(_global("__builtin__", "set") + b")R"))) == set()  # Python 2 name, as Python 3 maps it
    with pytest.raises(CheckpointError, match=r"^old.pth: refusing os.system"):
        module.load(io.BytesIO(_pickle(_global("os", "system") + b"(" + _text("true") + b"tR")))
    with pytest.raises(CheckpointError, match="refusing collections.deque"):
        module.Unpickler(io.BytesIO(_pickle(_global("collections", "deque") + b")R"))).load()


# ---- TorchScript archives ----------------------------------------------------------------------------

class _Mixed(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.bn = torch.nn.BatchNorm2d(4)  # int64 num_batches_tracked
        self.head = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2).double())
        base = torch.arange(20, dtype=torch.float32)
        self.register_buffer("window", base[5:11].view(2, 3))  # a view: offset into a shared storage
        self.register_buffer("strided", base[::4])
        self.register_buffer("mask", torch.tensor([True, False, True]))
        self.register_buffer("halves", torch.linspace(-1, 1, 5).half())
        self.register_buffer("empty", torch.zeros(0))
        self.register_buffer("no_ids", torch.zeros(0, dtype=torch.int64))  # an empty storage keeps its dtype

    def forward(self, x):
        return self.head(self.bn(self.conv(x)).mean((2, 3)))


def _scripted(tmp_path) -> Path:
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(_Mixed().eval()), str(path))
    return path


def test_torchscript_tensors_equal_the_trusted_state_dict(tmp_path):
    path = _scripted(tmp_path)
    data = path.read_bytes()
    archive = zipfile.ZipFile(io.BytesIO(data))
    assert is_torchscript(archive)
    tensors = torchscript_tensors(path, data, archive)
    expected = torch.jit.load(str(path)).state_dict()
    assert list(tensors) == sorted(expected)
    for name, value in expected.items():
        assert tensors[name].dtype == value.dtype and tensors[name].shape == value.shape, name
        assert torch.equal(tensors[name], value), name
    # own memory: changing the file's bytes afterwards changes nothing
    before = tensors["conv.weight"].clone()
    data = bytearray(data)
    assert torch.equal(tensors["conv.weight"], before)


def test_is_torchscript_only_for_archives_with_a_program():
    buffer = io.BytesIO()
    torch.save({"w": torch.zeros(1)}, buffer)
    assert not is_torchscript(zipfile.ZipFile(io.BytesIO(buffer.getvalue())))
    for member in ("archive/constants.pkl", "archive/code/__torch__.py"):
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as archive:
            archive.writestr(member, b"")
        assert is_torchscript(zipfile.ZipFile(io.BytesIO(out.getvalue()))), member


def _replace(path: Path, tmp_path: Path, name: str, member_suffix: str, content: bytes | None) -> Path:
    source = zipfile.ZipFile(path)
    out = tmp_path / name
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        for info in source.infolist():
            if info.filename.endswith(member_suffix) and "constants" not in info.filename:
                if content is not None:
                    archive.writestr(info.filename, content)
            else:
                archive.writestr(info.filename, source.read(info))
    return out


def _rebuild(pid: bytes, size: bytes = b"(K\x02t", stride: bytes = b"(K\x01t") -> bytes:
    return (_global("torch._utils", "_rebuild_tensor_v2") + b"(" + pid + b"Q" + b"K\x00" + size + stride + b"\x89"
            + _global("collections", "OrderedDict") + b")RtR")


def _pid(key: str = "0", dtype: bytes = _global("torch", "FloatStorage"), tag: str = "storage") -> bytes:
    return b"(" + _text(tag) + dtype + _text(key) + _text("cpu") + b"K\x02t"


@pytest.mark.parametrize("case, data_pkl, words", [
    ("global", _pickle(_global("os", "system") + b"(" + _text("true") + b"tR"), "refusing os.system"),
    ("builtins", _pickle(_global("builtins", "eval") + b"(" + _text("1") + b"tR"), "refusing builtins.eval"),
    ("jit-other", _pickle(_global("torch.jit._pickle", "restore_type") + b"(" + _text("1") + b"tR"), "refusing torch.jit._pickle.restore_type"),
    ("torch-other", _pickle(_global("torch", "load") + b"(" + _text("x") + b"tR"), "refusing torch.load"),
    ("missing-record", _pickle(_rebuild(_pid("nosuch"))), "missing record"),
    ("bad-pid", _pickle(_rebuild(_pid(tag="file"))), "unexpected persistent id"),
    ("bad-pid-dtype", _pickle(_rebuild(b"(" + _text("storage") + _text("float") + _text("0") + _text("cpu") + b"K\x02t")), "unexpected persistent id"),
    ("bad-pid-key", _pickle(_rebuild(b"(" + _text("storage") + _global("torch", "FloatStorage") + b"K\x00" + _text("cpu") + b"K\x02t")), "unexpected persistent id"),
    ("short-pid", _pickle(_rebuild(b"(" + _text("storage") + _global("torch", "FloatStorage") + b"t")), "unexpected persistent id"),
    ("bounds", _pickle(_rebuild(_pid(), size=b"(J\x00\x00\x00\x10t")), "over a storage of"),
    ("float-size", _pickle(_rebuild(_pid(), size=b"(G@\x00\x00\x00\x00\x00\x00\x00t")), "malformed tensor record"),
    ("float-stride", _pickle(_rebuild(_pid(), stride=b"(G?\xf0\x00\x00\x00\x00\x00\x00t")), "malformed tensor record"),
    ("not-a-storage", _pickle(_global("torch._utils", "_rebuild_tensor_v2") + b"(" + b"K\x00" + b"K\x00(K\x01t(K\x01t\x89" + _global("collections", "OrderedDict") + b")RtR"), "malformed tensor record"),
    ("broadcast-2d", _pickle(_rebuild(_pid(), size=b"(J\xa0\x86\x01\x00K\x02t", stride=b"(K\x00K\x01t")), "a tensor of 200000 elements over a storage of"),  # every dimension counts
    ("float-offset", _pickle(_global("torch._utils", "_rebuild_tensor_v2") + b"(" + _pid() + b"Q" + b"G?\xf0\x00\x00\x00\x00\x00\x00(K\x01t(K\x01t\x89" + _global("collections", "OrderedDict") + b")RtR"), "malformed tensor record"),
])
def test_hostile_torchscript_records_are_refused_with_the_reason(tmp_path, case, data_pkl, words):
    path = _replace(_scripted(tmp_path), tmp_path, f"{case}.pt", "/data.pkl", data_pkl)
    data = path.read_bytes()
    with pytest.raises(CheckpointError) as info:
        torchscript_tensors(path, data, zipfile.ZipFile(io.BytesIO(data)))
    assert "TorchScript archive whose weights cannot be read without running its code" in str(info.value)
    assert words in str(info.value), str(info.value)
    assert "--trust-code" in info.value.fix


def test_torchscript_reader_builds_the_tensors_of_a_hand_written_record(tmp_path):
    """A data.pkl naming only what the reader admits: every storage dtype, the jit list helpers, stand-in classes."""
    values = np.arange(4, dtype=np.float32)
    out = tmp_path / "hand.pt"
    state = (b"}(" + _text("a") + _rebuild(_pid("0"))
             + _text("b") + _global("torch.jit._pickle", "build_intlist") + b"(]K\x01atR"
             + _text("c") + _global("__torch__.m", "Sub") + b")\x81" + b"}(" + _text("d") + _rebuild(_pid("1", _global("torch", "DoubleStorage")), size=b"(K\x01t") + b"ub"
             + b"u")
    data_pkl = _pickle(_global("__torch__.m", "Top") + b")\x81" + state + b"b")
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("hand/data.pkl", data_pkl)
        archive.writestr("hand/constants.pkl", _pickle(b")"))
        archive.writestr("hand/data/0", values.tobytes())
        archive.writestr("hand/data/1", np.array([2.5], np.float64).tobytes())
    data = out.read_bytes()
    tensors = torchscript_tensors(out, data, zipfile.ZipFile(io.BytesIO(data)))
    assert list(tensors) == ["a", "c.d"]
    assert torch.equal(tensors["a"], torch.tensor([0.0, 1.0]))
    assert tensors["c.d"].dtype == torch.float64 and tensors["c.d"].tolist() == [2.5]


def _hand_archive(out: Path, data_pkl: bytes, records: dict, compress: dict | None = None) -> bytes:
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("hand/data.pkl", data_pkl)
        archive.writestr("hand/constants.pkl", _pickle(b")"))
        for key, raw in records.items():
            archive.writestr(f"hand/data/{key}", raw, compress_type=(compress or {}).get(key, zipfile.ZIP_STORED))
    return out.read_bytes()


def _top_with_weight(size: bytes = b"(K\x01t", stride: bytes = b"(K\x01t") -> bytes:
    return _pickle(_global("__torch__.m", "Top") + b")\x81" + b"}(" + _text("w") + _rebuild(_pid("0"), size=size, stride=stride) + b"ub")


@pytest.mark.parametrize("raw", [b"", b"\x00\x00\x80"])
def test_a_storage_record_shorter_than_one_element_holds_no_elements(tmp_path, raw):
    """0 or 3 bytes of float32 are no element: a one-element tensor over them is refused, not read from
    memory the file never held."""
    data = _hand_archive(tmp_path / "short.pt", _top_with_weight(), {"0": raw})
    with pytest.raises(CheckpointError, match="a tensor of 1 elements over a storage of 0"):
        torchscript_tensors(tmp_path / "short.pt", data, zipfile.ZipFile(io.BytesIO(data)))


class _Hung(BaseException):
    pass


def test_a_module_state_that_refers_to_itself_is_walked_once(tmp_path):
    """Top {w: tensor, sub: Sub {me: <the same Sub>}}: the walk ends, with the one tensor."""
    import signal

    if not hasattr(signal, "setitimer"):
        pytest.skip("needs SIGALRM")
    sub = _global("__torch__.m", "Sub") + b")\x81\x94" + b"}(" + _text("me") + b"h\x00" + b"ub"  # MEMOIZE, BINGET 0
    data_pkl = _pickle(_global("__torch__.m", "Top") + b")\x81" + b"}(" + _text("w") + _rebuild(_pid("0")) + _text("sub") + sub + b"ub")
    data = _hand_archive(tmp_path / "cycle.pt", data_pkl, {"0": np.array([1.5, -2.0], np.float32).tobytes()})

    def hung(*_):
        raise _Hung("the walk did not end")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.setitimer(signal.ITIMER_REAL, 2.0)
    try:
        tensors = torchscript_tensors(tmp_path / "cycle.pt", data, zipfile.ZipFile(io.BytesIO(data)))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert list(tensors) == ["w"] and tensors["w"].tolist() == [1.5, -2.0]


def test_an_archive_of_one_record_is_refused_as_unreadable(tmp_path):
    """A program marker and nothing else: a CheckpointError naming the missing data.pkl, not an IndexError."""
    out = tmp_path / "bare.pt"
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("bare/constants.pkl", _pickle(b")"))
    data = out.read_bytes()
    with pytest.raises(CheckpointError, match="missing record bare/data.pkl"):
        torchscript_tensors(out, data, zipfile.ZipFile(io.BytesIO(data)))


def test_a_deflated_record_as_large_as_the_file_is_read(tmp_path):
    """Only a record larger than the whole file is a bomb: one of exactly the file's size is read."""
    out = tmp_path / "deflated.pt"
    size = 4096
    data = _hand_archive(out, _top_with_weight(b"(K\x04t"), {"0": bytes(size)}, {"0": zipfile.ZIP_DEFLATED})
    with zipfile.ZipFile(out, "a") as archive:
        archive.comment = b" " * (size - len(data))  # the file is now exactly as large as the record
    data = out.read_bytes()
    assert len(data) == size == zipfile.ZipFile(io.BytesIO(data)).getinfo("hand/data/0").file_size
    tensors = torchscript_tensors(out, data, zipfile.ZipFile(io.BytesIO(data)))
    assert list(tensors) == ["w"] and tensors["w"].tolist() == [0.0] * 4


@pytest.mark.parametrize("storage, dtype", [
    ("FloatStorage", torch.float32), ("HalfStorage", torch.float16), ("BFloat16Storage", torch.bfloat16),
    ("DoubleStorage", torch.float64), ("LongStorage", torch.int64), ("IntStorage", torch.int32),
    ("ShortStorage", torch.int16), ("ByteStorage", torch.uint8), ("CharStorage", torch.int8), ("BoolStorage", torch.bool),
])
def test_torchscript_storage_types(tmp_path, storage, dtype):
    reference = torch.tensor([1, 0, 1, 1], dtype=dtype)
    raw = reference.view(torch.uint8).numpy().tobytes() if dtype != torch.bool else bytes([1, 0, 1, 1])
    out = tmp_path / "typed.pt"
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("typed/data.pkl", _pickle(_global("__torch__.m", "Top") + b")\x81" + b"}(" + _text("w") + _rebuild(_pid("0", _global("torch", storage)), size=b"(K\x04t") + b"ub"))
        archive.writestr("typed/constants.pkl", _pickle(b")"))
        archive.writestr("typed/data/0", raw)
    data = out.read_bytes()
    tensors = torchscript_tensors(out, data, zipfile.ZipFile(io.BytesIO(data)))
    assert tensors["w"].dtype == dtype and torch.equal(tensors["w"], reference)


# ---- unreadable files ----------------------------------------------------------------------------------

def test_a_truncated_legacy_checkpoint_says_it_ends_early(tmp_path):
    from alexnet_deploy.checkpoints.load import load_checkpoint

    buffer = io.BytesIO()
    torch.save({"w": torch.zeros(100)}, buffer, _use_new_zipfile_serialization=False)
    path = tmp_path / "cut.pth"
    path.write_bytes(buffer.getvalue()[:10])
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(info.value).startswith(f"{path} is not a readable PyTorch checkpoint (the file ends early).")
    assert info.value.fix == "check that the file was saved with torch.save and copied completely"


@pytest.mark.parametrize("exc, reason", [
    (EOFError("Ran out of input"), "the file ends early"),
    (RuntimeError("PytorchStreamReader failed reading zip archive: failed finding central directory\nmore"), "the zip archive is truncated or damaged"),
    (zipfile.BadZipFile("File is not a zip archive"), "the zip archive is truncated or damaged"),
    (ValueError("bad value\nsecond line"), "ValueError: bad value"),
    (ValueError("y" * 150), "ValueError: " + "y" * 100),
    (KeyError(), "KeyError: KeyError"),
])
def test_not_a_checkpoint_reasons(exc, reason):
    from alexnet_deploy.checkpoints.pickles import not_a_checkpoint

    error = not_a_checkpoint(Path("m.pth"), exc)
    assert isinstance(error, CheckpointError)
    assert str(error).startswith(f"m.pth is not a readable PyTorch checkpoint ({reason}).")


# ---- the loaders enforce the allowlist themselves (not only the static scan before them) ------------------

MAGIC = 0x1950A86A20F9469CFC6C  # torch's legacy (pre-1.6) magic number


def _legacy_file(payload: bytes) -> bytes:
    info = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}
    return pickle.dumps(MAGIC, 2) + pickle.dumps(1001, 2) + pickle.dumps(info, 2) + payload


_zip_file = zip_with_data_pkl


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "pre-1.6"])
def test_load_allowlisted_refuses_a_global_the_scan_did_not_report(tmp_path, legacy):
    from alexnet_deploy.checkpoints.pickles import load_allowlisted

    marker = tmp_path / "pwned"
    payload = _pickle(_global("os", "system") + b"(" + _text(f"touch {marker}") + b"tR")
    data = _legacy_file(payload) if legacy else _zip_file(payload)
    archive = None if legacy else zipfile.ZipFile(io.BytesIO(data))
    path = tmp_path / "evil.pth"
    with pytest.raises(CheckpointError) as info:
        load_allowlisted(path, data, archive, {"torch.nn.modules.linear.Linear": torch.nn.Linear})
    assert not marker.exists()
    assert str(info.value).startswith(f"{path}: refusing os.system: {REFUSED_HOW}"), str(info.value)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "pre-1.6"])
def test_load_allowlisted_loads_admitted_classes_on_the_cpu(tmp_path, legacy):
    from alexnet_deploy.checkpoints.pickles import load_allowlisted

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 2)).eval()
    buffer = io.BytesIO()
    torch.save({"model": model, "best": np.float64(0.5)}, buffer, _use_new_zipfile_serialization=not legacy)
    data = buffer.getvalue()
    archive = None if legacy else zipfile.ZipFile(io.BytesIO(data))
    classes = {"torch.nn.modules.container.Sequential": torch.nn.Sequential, "torch.nn.modules.linear.Linear": torch.nn.Linear}
    core = getattr(np, "_core", None) or np.core
    classes.update({f"{core.__name__}.multiarray.scalar": core.multiarray.scalar, "numpy.dtype": np.dtype})
    loaded = load_allowlisted(tmp_path / "m.pth", data, archive, classes)
    assert type(loaded["model"]) is torch.nn.Sequential and float(loaded["best"]) == 0.5
    x = torch.randn(4, 3)
    assert torch.equal(loaded["model"](x), model(x))
    with pytest.raises(CheckpointError, match="refusing"):
        load_allowlisted(tmp_path / "m.pth", data, None if legacy else zipfile.ZipFile(io.BytesIO(data)), {})


@pytest.mark.parametrize("views, refused", [(2, False), (3, True), (1000, True)])
def test_many_tensors_over_one_storage_cannot_multiply_memory(tmp_path, views, refused):
    """Each view fits its storage, but each is cloned: N full views of a 4 KB storage would take
    N x 4 KB. Up to twice the storage the file holds is read (tied weights); more is refused."""
    entries = b"".join(_text(f"w{i}") + _rebuild(_pid("0"), size=b"(M\x00\x04t") for i in range(views))  # 1024 floats each
    data_pkl = _pickle(_global("__torch__.m", "Top") + b")\x81" + b"}(" + entries + b"ub")
    data = _hand_archive(tmp_path / "views.pt", data_pkl, {"0": np.arange(1024, dtype=np.float32).tobytes()})
    read = lambda: torchscript_tensors(tmp_path / "views.pt", data, zipfile.ZipFile(io.BytesIO(data)))  # noqa: E731
    if not refused:
        tensors = read()
        assert len(tensors) == views and all(torch.equal(t, torch.arange(1024, dtype=torch.float32)) for t in tensors.values())
        return
    with pytest.raises(CheckpointError) as info:
        read()
    assert "storage the file holds" in str(info.value) and "--trust-code" in info.value.fix
