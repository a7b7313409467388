"""Bench results as a table, CSV, a PNG chart and a BENCHMARKS.md section."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from alexnet_deploy.bench.load import short_flags
from alexnet_deploy.bench.stats import FIELDS


def rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One flat dict per result (latency fields prefixed ``latency_ms_``)."""
    flat = []
    for result in report["results"]:
        row = {k: v for k, v in result.items() if k != "latency_ms"}
        row["model"] = Path(row["model"]).name
        row.update({f"latency_ms_{k}": result["latency_ms"][k] for k in FIELDS})
        flat.append(row)
    return flat


def to_csv(report: dict[str, Any]) -> str:
    """The results as CSV text with a header row."""
    flat = rows(report)
    buffer = io.StringIO()
    columns = ["runtime", "model", "precision", "device", "io", "batch", "throughput_ips", "speedup", "baseline", "iterations", "gflops", "ceiling_pct",
               "other_cpu_share", "round_spread"] + [f"latency_ms_{k}" for k in FIELDS]
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(flat)
    return buffer.getvalue()


def _num(value, spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def ceilings_line(machine: dict[str, Any]) -> str:
    """'ISA: AVX2 yes, ...; GEMM ceilings: fp32 120 GFLOP/s, int8 480 (4.0x), bf16 ...'."""
    ceilings = machine.get("ceilings") or {}
    ratios = machine.get("ceiling_ratios") or {}
    parts = [f"{p} {c['gflops']:.0f} GFLOP/s" + (f" ({ratios[p]:.1f}x fp32)" if p in ratios else "") + f" [{c['how']}]" for p, c in ceilings.items()]
    return f"ISA: {machine.get('isa_line', 'unknown')}. GEMM ceilings at these threads: {'; '.join(parts) or 'not measured'}."


def markdown_table(report: dict[str, Any]) -> str:
    """The results as a Markdown table."""
    lines = [
        "| runtime | model | precision | batch | mean ms | p50 | p90 | p99 | min | max | images/s | speedup | GFLOP/s | % ceiling | trust |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows(report):
        lines.append(
            f"| {row['runtime']} | {row['model']} | {row['precision']} | {row['batch']} | {row['latency_ms_mean']:.2f} | {row['latency_ms_p50']:.2f} | "
            f"{row['latency_ms_p90']:.2f} | {row['latency_ms_p99']:.2f} | {row['latency_ms_min']:.2f} | {row['latency_ms_max']:.2f} | "
            f"{row['throughput_ips']:.1f} | {row['speedup']:.2f}x | {_num(row.get('gflops'), '.0f')} | {_num(row.get('ceiling_pct'), '.0f', '%')} | {short_flags(row)} |"
        )
    return "\n".join(lines)


def plot_png(report: dict[str, Any], path: Path) -> Path:
    """A horizontal bar chart of throughput per result, written atomically."""
    from PIL import Image, ImageDraw, ImageFont

    from alexnet_deploy.fileio import atomic_write

    flat = rows(report)
    font = ImageFont.load_default()
    labels = [f"{r['runtime']} {r['model']} b{r['batch']}" for r in flat]
    left = max(int(font.getlength(label)) for label in labels) + 16
    bar_width, row_h = 420, 22
    image = Image.new("RGB", (left + bar_width + 90, 40 + row_h * len(flat)), "white")
    draw = ImageDraw.Draw(image)
    draw.text((8, 10), "throughput (images/s), higher is better", fill="black", font=font)
    peak = max(r["throughput_ips"] for r in flat) or 1.0
    for i, (label, row) in enumerate(zip(labels, flat)):
        y = 34 + i * row_h
        draw.text((8, y + 4), label, fill="black", font=font)
        width = int(bar_width * row["throughput_ips"] / peak)
        draw.rectangle((left, y + 2, left + max(width, 1), y + row_h - 4), fill=(70, 130, 200))
        draw.text((left + width + 6, y + 4), f"{row['throughput_ips']:.1f}", fill="black", font=font)
    return atomic_write(Path(path), lambda tmp: image.save(tmp, format="PNG"))


def write_section(target: Path, section: str) -> None:
    """Replace (or append) this benchmark's section in ``target``, keeping the others."""
    title = section.splitlines()[0]
    text = target.read_text() if target.exists() else "# Benchmarks\n\nMeasured, not asserted. Each section says how it was measured.\n"
    parts = text.split("\n## ")
    head, sections = parts[0], ["## " + p for p in parts[1:]]
    same = [s.splitlines()[0] == title for s in sections]
    sections = [section if match else s for s, match in zip(sections, same)]
    if not any(same):
        sections.append(section)
    from alexnet_deploy.fileio import atomic_write_bytes

    atomic_write_bytes(target, (head.rstrip("\n") + "\n\n" + "\n".join(s.rstrip("\n") + "\n" for s in sections)).encode())
