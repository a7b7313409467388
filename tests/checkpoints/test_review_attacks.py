"""Attacks a hostile review found after the trust allowlist landed, each pinned: the file is
refused with a one-line error and nothing outside the loaded object changes."""

from __future__ import annotations

import collections
import io
import pickle
import zipfile

import pytest
import torch

from alexnet_deploy.checkpoints.load import load_checkpoint
from alexnet_deploy.errors import CheckpointError
from pickle_bytes import global_ as G, long1, text as T, zip_with_data_pkl

EMPTY = b"}"
MODULE_STATE = b"".join(T(k) + EMPTY for k in ("_parameters", "_buffers", "_backward_hooks", "_forward_hooks"))


def _legacy(main: bytes) -> bytes:
    """A pre-1.6 torch.save file (magic, protocol, sys info, the pickle, no storages)."""
    sysinfo = dict(protocol_version=1001, little_endian=True, type_sizes=dict(short=2, int=4, long=4))
    return b"".join(pickle.dumps(x, protocol=2) for x in (0x1950A86A20F9469CFC6C, 1001, sysinfo)) + main + pickle.dumps([], protocol=2)


def test_a_legacy_pickle_cannot_set_state_on_a_class(tmp_path):
    """BUILD on the class collections.Counter (which torch's own allowlist names) used to replace
    Counter.update for the whole process once the file was loaded with --trust-code."""
    identity = G("torch.nn.modules.linear", "Identity") + b")\x81}(" + T("training") + b"\x89" + MODULE_STATE + T("_modules") + EMPTY + b"ub"
    mutate = G("collections", "Counter") + b"N}(" + T("update") + G("torch.nn.modules.linear", "Identity") + b"u\x86b0"
    path = tmp_path / "legacy.pth"
    path.write_bytes(_legacy(b"\x80\x02" + mutate + b"}(" + T("model") + identity + b"u."))
    update = collections.Counter.update
    with pytest.raises(CheckpointError, match="BUILD on collections.Counter"):
        load_checkpoint(path, trust_code=True)
    assert collections.Counter.update is update and collections.Counter("aab") == {"a": 2, "b": 1}


def test_a_module_that_contains_itself_is_refused(tmp_path):
    """state_dict() on it recursed until Python gave up: an internal error (exit 3)."""
    seq = (G("torch.nn.modules.container", "Sequential") + b")\x81q\x01}(" + T("training") + b"\x89" + MODULE_STATE
           + T("_modules") + b"}(" + T("0") + b"h\x01uub")
    path = tmp_path / "cycle.pth"
    path.write_bytes(zip_with_data_pkl(b"\x80\x02" + seq + b"."))
    with pytest.raises(CheckpointError, match="contains itself"):
        load_checkpoint(path, trust_code=True)


def test_a_bytearray_of_the_files_choosing_is_refused_before_loading(tmp_path, monkeypatch):
    """bytearray(1500000000) is 936 bytes of pickle that torch's reader admits: 1.5 GB, no trust needed."""
    path = tmp_path / "bytearray.pth"
    path.write_bytes(zip_with_data_pkl(b"\x80\x02}(" + T("w") + G("builtins", "bytearray") + b"(" + long1(1_500_000_000) + b"tRu."))
    import alexnet_deploy.checkpoints.load as load

    def never(*args, **kwargs):
        raise AssertionError("the file reached the unpickler")

    monkeypatch.setattr(load, "quiet_torch_load", never)
    with pytest.raises(CheckpointError, match="refusing builtins.bytearray"):
        load_checkpoint(path)


def test_a_view_larger_than_its_storage_is_refused(tmp_path):
    """zeros(1).expand(200000, 4096): a few bytes of file that build an 800-million-weight model."""
    state = torch.nn.Linear(4, 3).state_dict()
    state["weight"] = torch.zeros(1).expand(200_000, 4096)
    path = tmp_path / "expanded.pth"
    torch.save(state, path)
    assert path.stat().st_size < 10_000
    with pytest.raises(CheckpointError, match="view of 819200000 elements over a storage of 1"):
        load_checkpoint(path)
    torch.save({k: v.contiguous() for k, v in torch.nn.Linear(4, 3).state_dict().items()}, path)
    assert load_checkpoint(path).state_dict["weight"].shape == (3, 4)  # whole weights still load


def test_a_dict_whose_items_is_replaced_is_refused_without_trust(tmp_path):
    """BUILD on an OrderedDict torch's reader made set its ``items`` to 1: our call of .items()
    then failed as an internal error (exit 3); any admitted class there would have been called."""
    path = tmp_path / "items.pth"
    path.write_bytes(zip_with_data_pkl(b"\x80\x02" + G("collections", "OrderedDict") + b")R}(" + T("items") + b"K\x01ub."))
    with pytest.raises(CheckpointError, match=r"refusing the file's object\.items \(builtins\.int\)"):
        load_checkpoint(path)
