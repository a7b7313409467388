"""Output paths checked before slow work; a full disk is a one-line error; labels that would break labels.txt refused."""

from __future__ import annotations

import errno
import json
import pathlib

import pytest

from alexnet_deploy.errors import InputError
from alexnet_deploy.fileio import atomic_write_bytes

LONG = "a" * 300 + ".onnx"  # over NAME_MAX (255) on every common Linux filesystem


def one_error(result) -> str:
    """The error line: exactly one, and no traceback."""
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def no_slow_work(monkeypatch):
    """Make loading a checkpoint or quantizing fail loudly: the check must come first."""
    import alexnet_deploy.quantize.pipeline as quantize
    import alexnet_deploy.checkpoints.resolve as resolve

    def never(*args, **kwargs):
        raise AssertionError("slow work started before the output path was checked")

    monkeypatch.setattr(resolve, "resolve_model", never)
    monkeypatch.setattr(quantize, "_convert", never)


def test_export_over_long_name_fails_before_loading_the_checkpoint(cli, half_width, tmp_path, monkeypatch):
    no_slow_work(monkeypatch)
    line = one_error(cli.fails(2, "export", half_width[0], "-o", tmp_path / LONG))
    assert "305 bytes" in line and "255" in line
    assert list(tmp_path.iterdir()) == []


def test_export_over_long_folder_name_is_a_clean_error(cli, half_width, tmp_path, monkeypatch):
    no_slow_work(monkeypatch)
    assert "File name too long" in one_error(cli.fails(2, "export", half_width[0], "-o", tmp_path / ("d" * 300) / "m.onnx"))


def test_quantize_over_long_name_fails_before_quantizing(cli, half_width_onnx, tmp_path, monkeypatch):
    no_slow_work(monkeypatch)
    one_error(cli.fails(2, "quantize", half_width_onnx, "-p", "fp16", "-o", tmp_path / LONG))
    assert list(tmp_path.iterdir()) == []


def test_build_checks_the_sidecar_name_before_building(cli, half_width_onnx, tmp_path):
    engine = tmp_path / ("e" * 246 + ".engine")  # 253 bytes: fine; its .json sidecar (258) is not
    assert "engine sidecar" in one_error(cli.fails(2, "build", half_width_onnx, "-o", engine))


def _half_written(errno_code):
    def write_bytes(self, data):  # the disk fills up half-way through
        with open(self, "wb") as fh:
            fh.write(data[: len(data) // 2])
        raise OSError(errno_code, "simulated: " + errno.errorcode[errno_code])

    return write_bytes


def test_export_onto_a_full_disk_is_a_one_line_error_and_keeps_the_old_file(cli, half_width, tmp_path, monkeypatch):
    out = tmp_path / "m.onnx"
    out.write_bytes(b"the good model from yesterday")
    monkeypatch.setattr(pathlib.Path, "write_bytes", _half_written(errno.ENOSPC))
    line = one_error(cli.fails(2, "export", half_width[0], "-o", out, "--no-verify"))
    monkeypatch.undo()
    assert "disk is full" in line and str(tmp_path) in line
    assert out.read_bytes() == b"the good model from yesterday"
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]  # no temporary file left


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO])
def test_disk_errors_in_the_shared_writer(tmp_path, monkeypatch, code):
    target = tmp_path / "report.json"
    monkeypatch.setattr(pathlib.Path, "write_bytes", _half_written(code))
    with pytest.raises(InputError) as caught:
        atomic_write_bytes(target, b"{}" * 1000)
    monkeypatch.undo()
    assert errno.errorcode[code] in caught.value.problem and str(tmp_path) in caught.value.problem
    assert list(tmp_path.iterdir()) == []


def test_disk_full_at_fsync_leaves_nothing(tmp_path, monkeypatch):
    import os

    def fsync(fd):  # delayed allocation: the error appears only when flushing
        raise OSError(errno.ENOSPC, "No space left on device")

    target = tmp_path / "x.onnx"
    target.write_bytes(b"old")
    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(InputError):
        atomic_write_bytes(target, b"new")
    monkeypatch.undo()
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["x.onnx"]


def test_overwriting_keeps_the_files_permissions_and_writes_through_a_symlink(tmp_path):
    import os
    import stat

    private = tmp_path / "private.json"
    private.write_bytes(b"old")
    private.chmod(0o600)
    atomic_write_bytes(private, b"new")
    assert private.read_bytes() == b"new" and stat.S_IMODE(private.stat().st_mode) == 0o600

    (tmp_path / "models").mkdir()
    real = tmp_path / "models" / "v3.onnx"
    real.write_bytes(b"v3")
    link = tmp_path / "current.onnx"
    link.symlink_to(real)
    atomic_write_bytes(link, b"v4")
    assert link.is_symlink() and os.readlink(link) == str(real) and real.read_bytes() == b"v4"
    assert sorted(p.name for p in real.parent.iterdir()) == ["v3.onnx"]  # no temporary file left beside it

    fresh = tmp_path / "new.json"
    atomic_write_bytes(fresh, b"{}")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o666 & ~umask


def test_a_name_near_the_limit_still_gets_a_temporary_file(tmp_path):
    target = tmp_path / ("n" * 250 + ".onnx")  # 255 bytes: legal, but ".NAME.XXXXXXXX.tmp" would not be
    atomic_write_bytes(target, b"ok")
    assert target.read_bytes() == b"ok"


# Labels: one per line in Triton's labels.txt, so a line break or an empty label shifts the classes.

BAD_LABELS = [["daisy", "dande\nlion", "roses", "sunflowers", "tulips"], ["daisy", "dande\rlion", "roses", "sunflowers", "tulips"],
              ["daisy", "", "roses", "sunflowers", "tulips"], ["daisy", "  ", "roses", "sunflowers", "tulips"]]


@pytest.mark.parametrize("labels", BAD_LABELS, ids=["newline", "carriage-return", "empty", "blank"])
def test_export_refuses_bad_labels_from_json(cli, half_width, tmp_path, labels):
    source = tmp_path / "labels.json"
    source.write_text(json.dumps(labels))
    line = one_error(cli.fails(2, "export", half_width[0], "-o", tmp_path / "m.onnx", "--labels", source))
    assert "label 1" in line and ("line break" in line or "empty" in line)
    assert not (tmp_path / "m.onnx").exists()


def test_export_refuses_an_image_folder_with_a_line_break_in_a_class_name(cli, half_width, tmp_path):
    root = tmp_path / "train"
    for name in ("daisy", "dande\nlion", "roses", "sunflowers", "tulips"):
        (root / name).mkdir(parents=True)
    assert "line break" in one_error(cli.fails(2, "export", half_width[0], "-o", tmp_path / "m.onnx", "--labels", root))


def test_export_refuses_bad_labels_carried_by_the_checkpoint(cli, half_width, tmp_path):
    import torch

    _, model, _ = half_width
    checkpoint = tmp_path / "with_labels.pth"
    torch.save({"model_state_dict": model.state_dict(), "classes": BAD_LABELS[0]}, checkpoint)
    line = one_error(cli.fails(2, "export", checkpoint, "-o", tmp_path / "m.onnx", "--no-verify"))
    assert "checkpoint" in line and "line break" in line
    assert not (tmp_path / "m.onnx").exists()


def test_piped_tables_carry_no_trailing_spaces(cli, tmp_path):
    """rich pads every cell to its column; in a pipe or a file those spaces were kept at line ends."""
    from tiny_model import tiny_model, write_images

    model = tiny_model(tmp_path / "m.onnx", classes=("apple", "banana", "cherry"))
    for i, name in enumerate(("apple", "banana", "cherry")):
        write_images(tmp_path / "data" / name, 2, seed=i)
    for args in (["eval", model, "--data", tmp_path / "data"], ["bench", model, "--runtime", "ort", "--batch", "1", "--duration", "0.05"],
                 ["inspect", model]):
        result = cli.ok(*args)
        lines = result.stdout.splitlines()
        assert len(lines) > 3 and not [line for line in lines if line != line.rstrip(" ")], (args[0], [repr(line) for line in lines[:5]])


def test_optimize_view_cuts_nothing_on_an_80_column_terminal():
    """optimize printed rich Markdown, which cut the table's values ('openvi…') and the recommendation at 80 columns."""
    from rich.console import Console

    from alexnet_deploy.cli.render import optimize_view
    from alexnet_deploy.optimize import markdown, report_table

    row = {"variant": "bf16", "runtime": "openvino-bf16", "top1": 0.8125, "top5": 0.99, "agreement": 0.9875, "latency_b1_ms": 4.321,
           "throughput_ips": 429.38, "bytes": 244_000_000, "within_budget": True, "drop_points": 0.25, "drop_ci_points": [-0.5, 1.25],
           "flip_rate": 0.0125, "budget_verdict": "uncertain", "changed_count": 5,
           "changed_images": [{"image": "val/cat/1.jpg", "reference": "cat", "candidate": "dog", "truth": "cat"}]}
    rec = {"file": "out/best-latency.onnx", "from": "out/model.onnx", "variant": "bf16", "runtime": "openvino-bf16", "latency_b1_ms": 4.321,
           "throughput_ips": 429.38, "top1": 0.8125}
    report = {"target": "cpu", "source": "checkpoints/a-rather-long-checkpoint-name.pth", "batches": [1, 32],
              "budget": {"images": 400, "max_drop_points": 1.0, "fp32_top1": 0.815}, "rows": [row, dict(row, variant="int8", runtime="openvino")],
              "recommendation": {"latency": rec, "throughput": rec}, "int8_search": None, "skipped": [], "notes": ["a note " * 20]}
    console = Console(width=80, record=True, force_terminal=True, soft_wrap=True)
    console.print(optimize_view(report, 80))
    text = console.export_text()
    assert "…" not in text
    for cell in [c for row in report_table(report)[1] for c in row]:
        assert cell in text, cell
    assert "best latency: best-latency.onnx = bf16 (model.onnx) on openvino-bf16 (4.32 ms at batch 1, 429.4 img/s at batch 32, top-1 81.25%)" in text
    assert "| bf16 | openvino-bf16 | 81.25% | 0.25 (-0.50..1.25) | 99.00% | 1.25% | 4.32 | 429.4 | 244.0 | yes, uncertain |" in markdown(report)
    assert "bf16 on openvino-bf16: 5 image(s), e.g. 1.jpg: cat -> dog (truth cat)" in text
