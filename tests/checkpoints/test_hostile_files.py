"""Small hostile checkpoints must end in a one-line error (exit 2) quickly, in bounded memory,
and leave the process as it was: no cycle walked forever, no view larger than its storage,
no decompression bomb unpacked, no class patched by BUILD, no module imported by name."""

from __future__ import annotations

import collections
import io
import struct
import sys
import zipfile

import pytest
import torch

from alexnet_deploy.checkpoints.load import load_checkpoint
from alexnet_deploy.errors import CheckpointError
from pickle_bytes import global_ as _global, long1 as _long, text as _text, zip_with_data_pkl  # tests/pickle_bytes.py


def _torchscript_with(data_pkl: bytes, storage: bytes | None = None) -> bytes:
    """A real TorchScript archive whose data.pkl (and storage 0) are replaced."""
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), buffer)
    source = zipfile.ZipFile(io.BytesIO(buffer.getvalue()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        for info in source.infolist():
            name = info.filename
            if name.endswith("/data.pkl") and "constants" not in name:
                archive.writestr(name, data_pkl)
            elif storage is not None and name.endswith("/data/0"):
                archive.writestr(name, storage)
            else:
                archive.writestr(name, source.read(info))
    return out.getvalue()


def _refused(tmp_path, name: str, data: bytes, needle: str, cli) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(CheckpointError, match=needle):
        load_checkpoint(path)
    result = cli.fails(2, "inspect", path)
    assert len([line for line in result.stderr.splitlines() if line.strip()]) <= 2, result.stderr


def test_a_torchscript_state_that_refers_to_itself_is_walked_once(tmp_path, cli):
    # object Foo whose state is {"a": itself, "b": itself}: the tensor walk once never ended
    cycle = b"\x80\x02" + _global("__torch__", "Foo") + b")\x81q\x00}(" + _text("a") + b"h\x00" + _text("b") + b"h\x00ub."
    _refused(tmp_path, "cycle.pt", _torchscript_with(cycle), "without readable weights", cli)


def test_a_torchscript_view_larger_than_its_storage_is_refused(tmp_path, cli):
    # a 20000 x 20000 view with stride 0 over one float: cloning it once took 1.6 GB
    storage = b"(" + _text("storage") + _global("torch", "FloatStorage") + _text("0") + _text("cpu") + b"J" + struct.pack("<i", 1) + b"tQ"
    tensor = (_global("torch._utils", "_rebuild_tensor_v2") + b"(" + storage + b"J" + struct.pack("<i", 0)
              + b"(" + _long(20000) + _long(20000) + b"t(" + _long(0) + _long(0) + b"t\x89" + _global("collections", "OrderedDict") + b")RtR")
    _refused(tmp_path, "stride0.pt", _torchscript_with(b"\x80\x02" + tensor + b".", storage=b"\0\0\0\0"), "400000000 elements", cli)


def test_a_deflated_record_that_unpacks_far_beyond_the_file_is_refused(tmp_path, cli):
    buffer = io.BytesIO()
    torch.save({"w": torch.zeros(16 * 1024 * 1024 // 4)}, buffer)  # 16 MB of zeros, deflated to ~16 kB
    source = zipfile.ZipFile(io.BytesIO(buffer.getvalue()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for info in source.infolist():
            compress = zipfile.ZIP_DEFLATED if info.filename.endswith("data/0") else zipfile.ZIP_STORED
            archive.writestr(info.filename, source.read(info), compress_type=compress, compresslevel=9)
    assert len(out.getvalue()) < 200_000
    _refused(tmp_path, "bomb.pth", out.getvalue(), "which torch.save never writes", cli)


def test_a_legacy_pickle_cannot_patch_classes_with_build(tmp_path, cli):
    # pre-1.6 layout: magic, protocol, sys info, then a payload that BUILDs attributes onto a
    # class and a function before naming numpy data; a plain Unpickler would apply them
    info = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}
    payload = (b"\x80\x02"
               + _global("collections", "Counter") + b"N}" + _text("most_common") + _global("torch", "Size") + b"s\x86b0"
               + b"}" + _text("dt") + _global("numpy", "dtype") + b"(" + _text("f4") + b"tRs.")
    import pickle

    data = pickle.dumps(0x1950A86A20F9469CFC6C, 2) + pickle.dumps(1001, 2) + pickle.dumps(info, 2) + payload + pickle.dumps([], 2)
    before = collections.Counter.most_common
    path = tmp_path / "legacy_build.pth"
    path.write_bytes(data)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
    assert collections.Counter.most_common is before
    cli.fails(2, "inspect", path)
    assert collections.Counter.most_common is before


def test_a_class_name_in_the_file_never_imports_its_module(tmp_path, cli):
    module = "torch.testing._internal.common_quantization"  # imports (and patches) things when imported
    assert module not in sys.modules
    payload = b"\x80\x02" + _global(module, "QuantizationTestCase") + b")\x81."
    path = tmp_path / "import.pth"
    path.write_bytes(zip_with_data_pkl(payload))
    with pytest.raises(CheckpointError, match="refusing"):
        load_checkpoint(path, trust_code=True)
    assert module not in sys.modules


@pytest.mark.parametrize("make, kind", [
    (lambda w: w.to_sparse(), "sparse"),
    (lambda w: torch.quantize_per_tensor(w, 0.1, 0, torch.qint8), "quantized"),
    (lambda w: w.to(torch.complex64), "complex"),
])
def test_weights_an_alexnet_cannot_use_are_named(tmp_path, cli, make, kind):
    path = tmp_path / f"{kind}.pth"
    torch.save({"features.0.weight": make(torch.ones(4, 3)), "features.0.bias": torch.zeros(4)}, path)
    with pytest.raises(CheckpointError, match=f"is a {kind} tensor"):
        load_checkpoint(path)


def test_label_keys_that_only_look_like_digits(tmp_path, cli, half_width):
    from safetensors.torch import save_file

    state = torch.load(half_width[0], weights_only=True)
    deep = tmp_path / "deep.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(deep), metadata={"classes": "[" * 100000 + "]" * 100000})
    assert cli(*["inspect", deep]).exit_code in (0, 2)  # no RecursionError: the text is kept as text
    superscript = tmp_path / "superscript.pth"
    torch.save({"state_dict": state, "classes": {"\u00b2": "cat", "0": "dog"}}, superscript)
    result = cli("inspect", superscript)
    assert result.exit_code in (0, 2) and "internal error" not in result.stderr
    labels = tmp_path / "labels.json"
    labels.write_text('{"0": "cat", "\u00b2": "dog"}')
    result = cli("export", half_width[0], "-o", tmp_path / "x.onnx", "--labels", labels, "--no-verify")
    assert result.exit_code == 2 and "internal error" not in result.stderr
