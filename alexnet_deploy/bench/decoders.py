"""Why image decoding is exact: PIL's JPEG ``draft`` mode measured against the exact path.

``python -m alexnet_deploy.bench.decoders MODEL.onnx [--write BENCHMARKS.md]`` makes JPEGs of
several sizes, decodes and preprocesses each the exact way (full decode, then torchvision's
Resize) and with ``Image.draft`` (libjpeg's DCT scaling to the smallest 1/2, 1/4 or 1/8 size
still at least twice the resize target, then the same Resize), and reports the speed of each
and how far the draft path's tensors and the model's logits move from the exact ones, judged
by ``alexnet verify``'s FP32 criteria (relative error <= 1e-4, cosine >= 0.99999).
"""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

import numpy as np

SIZES = ((500, 375), (1024, 768), (2048, 1536), (4032, 3024))


def _photo_like(width: int, height: int, rng) -> bytes:
    """A JPEG (quality 90) of smooth shapes plus mild noise: closer to a photo's spectrum than white noise."""
    from PIL import Image, ImageDraw, ImageFilter

    image = Image.new("RGB", (width, height), tuple(int(v) for v in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        box = (x0, y0, x0 + int(rng.integers(width // 8, width // 2)), y0 + int(rng.integers(height // 8, height // 2)))
        draw.ellipse(box, fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    image = image.filter(ImageFilter.GaussianBlur(radius=max(1, width // 400)))
    pixels = np.asarray(image, np.float32) + rng.normal(0, 6, (height, width, 3))
    out = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(out, format="JPEG", quality=90)
    return out.getvalue()


def _draft_input(data: bytes, spec) -> np.ndarray:
    from PIL import Image

    from alexnet_deploy import imaging

    with Image.open(io.BytesIO(data)) as image:
        target = imaging.resized_size(*image.size, spec.resize, spec.resize_mode)
        image.draft("RGB", (2 * target[0], 2 * target[1]))  # libjpeg scales by 1/2, 1/4 or 1/8, never below this
        image.load()
        rgb = image.convert("RGB")
    return imaging.transform(rgb, spec.resize, spec.crop, spec.mean, spec.std, spec.interpolation, spec.resize_mode)


def measure(model: Path, count: int = 12, seed: int = 0) -> list[dict]:
    """One row per image size: ms per image exact and draft, max |tensor diff|, worst logits relative error and cosine."""
    from alexnet_deploy.classifier import Classifier
    from alexnet_deploy.preprocess import model_input
    from alexnet_deploy.verify.metrics import compare_logits

    rng = np.random.default_rng(seed)
    rows = []
    with Classifier(model) as classifier:
        spec = classifier.preprocessing
        for width, height in SIZES:
            files = [_photo_like(width, height, rng) for _ in range(count)]
            timings = {}
            tensors = {}
            for name, run in (("exact", lambda d: model_input(d, spec)), ("draft", lambda d: _draft_input(d, spec))):
                run(files[0])
                started = time.perf_counter()
                tensors[name] = np.stack([run(d) for d in files])
                timings[name] = 1000 * (time.perf_counter() - started) / count
            summary = compare_logits(classifier.logits(tensors["draft"]), classifier.logits(tensors["exact"])).summary()
            rows.append({
                "size": f"{width}x{height}", "exact_ms": timings["exact"], "draft_ms": timings["draft"], "speedup": timings["exact"] / timings["draft"],
                "max_abs_input_diff": float(np.abs(tensors["draft"] - tensors["exact"]).max()),
                "max_rel_err": summary["max_rel_err"], "min_cosine": summary["min_cosine"], "top1_agreement": summary["top1_agreement"],
            })
    return rows


def markdown(rows: list[dict], model: Path) -> str:
    lines = [
        "## JPEG draft decoding against the exact path (`python -m alexnet_deploy.bench.decoders`)", "",
        f"Model {model.name}; 12 JPEGs (quality 90) per size, each decoded and preprocessed both ways on one thread.", "",
        "| JPEG size | exact ms/image | draft ms/image | speedup | max input diff | worst logits rel. error | min cosine | top-1 agreement |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['size']} | {r['exact_ms']:.2f} | {r['draft_ms']:.2f} | {r['speedup']:.2f}x | {r['max_abs_input_diff']:.3f} | "
                     f"{r['max_rel_err']:.2e} | {r['min_cosine']:.6f} | {100 * r['top1_agreement']:.0f}% |")
    lines += ["", "FP32 verify criteria: relative error <= 1e-4 and cosine >= 0.99999 per sample."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--write", type=Path, help="the Markdown file whose section to update")
    args = parser.parse_args(argv)
    rows = measure(args.model)
    text = markdown(rows, args.model)
    print(text)
    if args.write:
        from alexnet_deploy.bench.report import write_section

        write_section(args.write, text)


if __name__ == "__main__":
    main()
