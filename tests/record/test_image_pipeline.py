"""The image pipeline: parallel decoding ahead of the consumer, in input order, bounded, exact;
pixel limits checked before decoding; image folders that do not lead out of themselves."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest
from PIL import Image

from tiny_model import black_png, torchvision_input, write_images

from alexnet_deploy.image_stream import ImageStream
from alexnet_deploy.record import Preprocessing

SPEC = Preprocessing(20, 16, mean=(0.5, 0.45, 0.4), std=(0.25, 0.25, 0.3))


def test_stream_gives_every_image_in_order_equal_to_torchvision(tmp_path):
    paths = write_images(tmp_path / "imgs", 150)  # several chunks, more than one of 64
    broken = {37: b"not an image", 100: b"\x89PNG\r\n\x1a\n truncated"}
    for index, data in broken.items():
        paths[index] = tmp_path / "imgs" / f"broken{index}.jpg"
        paths[index].write_bytes(data)
    seen, skipped, sizes = [], {}, []
    for chunk in ImageStream(paths, SPEC, batch=32, workers=2):
        sizes.append(len(chunk.indices) + len(chunk.skipped))
        for index, row in zip(chunk.indices, chunk.array):
            np.testing.assert_allclose(row, torchvision_input(paths[index], SPEC), rtol=0, atol=1e-6)
        seen += chunk.indices
        skipped.update(chunk.skipped)
    assert seen == [i for i in range(150) if i not in broken]  # every good image, once, in input order
    assert set(skipped) == set(broken) and all("cannot be decoded" in reason for reason in skipped.values())
    assert sizes == [32, 32, 32, 32, 22]


def _gated(monkeypatch, gate):
    """Make the stream's per-image work call ``gate()`` first (in the worker thread)."""
    import alexnet_deploy.image_stream as image_stream

    real = image_stream.model_input

    def model_input(*args, **kwargs):
        gate()
        return real(*args, **kwargs)

    monkeypatch.setattr(image_stream, "model_input", model_input)


def test_images_are_decoded_on_several_threads_at_once(tmp_path, monkeypatch):
    # Two workers must be inside the decoding step together: a barrier of two that a serial
    # loop could never pass (it breaks after its timeout).
    barrier = threading.Barrier(2, timeout=30)
    _gated(monkeypatch, barrier.wait)
    paths = write_images(tmp_path / "imgs", 4)
    got = [i for chunk in ImageStream(paths, SPEC, batch=4, workers=2) for i in chunk.indices]
    assert got == [0, 1, 2, 3]


def test_decoding_runs_ahead_of_the_consumer_but_boundedly(tmp_path, monkeypatch):
    """While the consumer holds chunk 1 (the model running), the pool decodes the next ones, at most ``ahead`` chunks."""
    done = []
    lock = threading.Lock()

    def count():
        with lock:
            done.append(1)

    _gated(monkeypatch, count)
    paths = write_images(tmp_path / "imgs", 40)
    stream = iter(ImageStream(paths, SPEC, batch=4, workers=2, ahead=2))
    first = next(stream)
    assert first.indices == [0, 1, 2, 3]
    deadline = time.monotonic() + 30
    while len(done) < 12 and time.monotonic() < deadline:  # chunks 2 and 3 decode while we "run the model"
        time.sleep(0.01)
    time.sleep(0.2)
    assert len(done) == 12, f"{len(done)} images decoded while the consumer held chunk 1; expected 3 chunks of 4"
    rest = [i for chunk in stream for i in chunk.indices]
    assert rest == list(range(4, 40)) and len(done) == 40


def test_stopping_early_cancels_what_was_not_started(tmp_path, monkeypatch):
    done = []
    _gated(monkeypatch, lambda: done.append(1))
    paths = write_images(tmp_path / "imgs", 200)
    for chunk in ImageStream(paths, SPEC, batch=8, workers=2, ahead=1):
        break
    time.sleep(0.2)
    assert len(done) <= 3 * 8  # the first chunk and what was queued: not the other 176 images


def test_images_over_the_pixel_limits_are_skipped_before_they_are_decoded(tmp_path, monkeypatch):
    from alexnet_deploy.imaging import MAX_IMAGE_PIXELS, MAX_RESIZED_PIXELS

    # 100000x1: 375 bytes of PNG that Resize(256) would turn into 25,600,000x256 pixels (about 20 GB).
    thin = black_png(tmp_path / "thin.png", 100_000, 1)
    # 10000x10000: between PIL's warning and its error (1x-2x MAX_IMAGE_PIXELS), so PIL alone would decode 100 MB.
    big = black_png(tmp_path / "big.png", 10_000, 10_000)
    assert thin.stat().st_size < 1000 and big.stat().st_size < 200_000
    from PIL import ImageFile

    loads = []
    real_load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: loads.append(self.size) or real_load(self))
    chunks = list(ImageStream([big], SPEC, batch=2, workers=1))
    assert chunks[0].indices == [] and f"over the limit of {MAX_IMAGE_PIXELS:,} pixels" in chunks[0].skipped[0][1]
    assert loads == []  # refused from the header
    monkeypatch.undo()
    spec = Preprocessing(256, 224)
    chunks = list(ImageStream([thin], spec, batch=2, workers=1))
    assert chunks[0].indices == [] and f"over the limit of {MAX_RESIZED_PIXELS:,} pixels" in chunks[0].skipped[0][1]


def test_predict_skips_an_oversized_image_and_labels_the_rest(cli, tmp_path):
    import json

    from tiny_model import tiny_model

    model = tiny_model(tmp_path / "m.onnx")
    folder = tmp_path / "imgs"
    write_images(folder, 3)
    black_png(folder / "thin.png", 100_000, 1)
    result = json.loads(cli.ok("predict", model, folder, "--json").stdout)
    assert len(result["predictions"]) == 3
    assert [s["image"] for s in result["skipped"]] == [str(folder / "thin.png")] and "over the limit" in result["skipped"][0]["reason"]


def _folder_with_links(tmp_path):
    """root/ with: a real image, a link to an image inside, a link to an image outside, a link to a
    folder outside, a link loop, and a FIFO named like an image (reading it would block forever)."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    inside = write_images(root / "cls", 2)
    secret = write_images(outside, 1)[0]
    (root / "cls" / "inner-link.png").symlink_to(inside[0])
    (root / "cls" / "escape.png").symlink_to(secret)
    (root / "cls" / "elsewhere").symlink_to(outside, target_is_directory=True)
    (root / "cls" / "loop").symlink_to(root, target_is_directory=True)
    os.mkfifo(root / "cls" / "pipe.jpg")
    return root, inside, secret


def test_folders_are_listed_without_following_links_out_of_them(tmp_path):
    from alexnet_deploy.datasets import open_image_set
    from alexnet_deploy.preprocess import scan_images

    root, inside, secret = _folder_with_links(tmp_path)
    listing = scan_images(root)
    assert sorted(listing.files) == sorted(inside + [root / "cls" / "inner-link.png"])
    reasons = {path.name: reason for path, reason in listing.excluded}
    assert set(reasons) == {"escape.png", "elsewhere", "loop", "pipe.jpg"}
    assert "outside the folder" in reasons["escape.png"] and "link to a folder" in reasons["elsewhere"] and "not a regular file" in reasons["pipe.jpg"]
    (root / "other").mkdir()
    (root / "other" / "borrowed.png").symlink_to(inside[1])  # a link to another class's image: inside the data folder
    images = open_image_set(root)
    assert images.labelled and len(images.paths) == 4 and {p.name for p, _ in images.excluded} == set(reasons)
    assert images.paths[-1].name == "borrowed.png" and images.targets[-1] == 1
    followed = scan_images(root, follow_links=True)  # asked for: links are followed, each real folder once (the loop ends)
    assert secret in [p.resolve() for p in followed.files] and len(followed.files) == 6


def test_eval_and_predict_report_what_the_listing_left_out(cli, tmp_path):
    import json

    from tiny_model import tiny_model

    model = tiny_model(tmp_path / "m.onnx", classes=("cls", "other"))
    root, _, secret = _folder_with_links(tmp_path)
    write_images(root / "other", 2, seed=3)
    report = json.loads(cli.ok("eval", model, "--data", root, "--json").stdout)
    assert report["n"] == 5 and {os.path.basename(e["path"]) for e in report["excluded"]} == {"escape.png", "elsewhere", "loop", "pipe.jpg"}
    result = json.loads(cli.ok("predict", model, root, "--json").stdout)
    # predict labels each file once: the inner link is the same file as cls/img0000
    assert str(secret) not in [p["image"] for p in result["predictions"]] and len(result["predictions"]) == 4
    assert {os.path.basename(s["image"]) for s in result["skipped"]} == {"escape.png", "elsewhere", "loop", "pipe.jpg"}
    followed = json.loads(cli.ok("predict", model, root, "--json", "--follow-links").stdout)
    assert len(followed["predictions"]) == 5  # plus the outside image (reached twice, labelled once); the loop is cut


def test_only_ordinary_image_formats_are_opened(tmp_path):
    """Pillow tries every plugin it has unless told which: an EPS file reached Ghostscript (a program
    run on a client's bytes). Only JPEG, PNG, BMP, PPM/PGM, TIFF, WebP and GIF are opened."""
    import io

    from alexnet_deploy.errors import InputError
    from alexnet_deploy.preprocess import preprocess_image

    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\nshowpage\n"
    with pytest.raises(InputError, match=r"cannot be decoded \(UnidentifiedImageError\)"):
        preprocess_image(eps, SPEC)
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (20, 24, 3), dtype=np.uint8))
    for fmt in ("JPEG", "PNG", "BMP", "PPM", "TIFF", "WEBP", "GIF", "MPO"):  # MPO: a camera's JPEG
        data = io.BytesIO()
        image.save(data, format=fmt)
        np.testing.assert_allclose(preprocess_image(data.getvalue(), SPEC), torchvision_input(Image.open(io.BytesIO(data.getvalue())), SPEC), atol=1e-6)


def _jpeg(tmp_size=(16, 16), progressive=False) -> bytes:
    import io

    data = io.BytesIO()
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (*tmp_size, 3), dtype=np.uint8)).save(data, format="JPEG", progressive=progressive)
    return data.getvalue()


def test_files_that_make_pillow_hoard_metadata_or_scan_forever_are_refused_before_it_opens_them(monkeypatch):
    """Empty JPEG APP segments or one-byte GIF comment blocks became Python lists of GBs inside
    Image.open, and thousands of progressive scans took minutes of CPU: each is refused first."""
    from alexnet_deploy import imaging

    opened = []
    real_open = Image.open
    monkeypatch.setattr(imaging.Image, "open", lambda *a, **k: opened.append(1) or real_open(*a, **k))
    jpeg = _jpeg()
    many_segments = jpeg[:2] + b"\xff\xe0\x00\x02" * (imaging.MAX_JPEG_SEGMENTS + 1) + jpeg[2:]
    many_scans = _jpeg(progressive=True)
    sos = many_scans.index(b"\xff\xda")
    many_scans = many_scans[:sos] + many_scans[sos:many_scans.rindex(b"\xff\xd9")] * 20 + b"\xff\xd9"  # the scans again and again
    import io

    buffer = io.BytesIO()
    Image.new("P", (8, 8)).save(buffer, format="GIF")
    gif = buffer.getvalue()
    first = 13 + 3 * 2 ** ((gif[10] & 7) + 1)  # after the header and the global colour table
    many_blocks = gif[:first] + b"\x21\xfe" + b"\x01x" * (imaging.MAX_GIF_EXTENSION_BLOCKS + 1) + b"\x00" + gif[first:]
    for data, words in ((many_segments, "segments"), (many_scans, "scans"), (many_blocks, "extension blocks")):
        with pytest.raises(imaging.ImageTooLarge, match=words):
            imaging.decode_rgb(data)
    assert opened == []
    for fine in (jpeg, _jpeg(progressive=True), gif):  # ordinary files of each kind still decode
        assert imaging.decode_rgb(fine).mode == "RGB"


def test_a_file_too_large_for_any_image_is_not_read_whole(tmp_path, monkeypatch):
    """Files are read whole before Pillow sees them (for the structure checks): only up to the limit."""
    from alexnet_deploy import imaging

    monkeypatch.setattr(imaging, "MAX_FILE_BYTES", 1000)
    big = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(big)
    assert big.stat().st_size > 1000
    chunks = list(ImageStream([big], SPEC, workers=1))
    assert chunks[0].indices == [] and "over the limit for one image" in chunks[0].skipped[0][1]
