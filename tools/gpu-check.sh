#!/usr/bin/env bash
# The GPU checks, as one prepared run for a lent CUDA machine (see docs/development.md):
# the CUDA tests, then torch on CUDA (FP32, FP16) beside onnxruntime on the same host's CPU,
# with host I/O and with inputs already on the GPU. Writes logs and JSON under $OUT
# (default ./gpu-out). Uses the machine's own torch/onnx/onnxruntime (no install).
# (The full `alexnet bench --suite` does not fit a 15-minute device lease: it quantizes
# every variant and times every CPU row at every batch.)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-out}; mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
{
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  python3 -c "import torch, onnx, onnxruntime, sys; print(sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available(), 'onnx', onnx.__version__, 'ort', onnxruntime.__version__, onnxruntime.get_available_providers())"
  nproc; grep -m1 'model name' /proc/cpuinfo
} 2>&1 | tee "$OUT/machine.txt"
# 1. the tests that need a GPU (they skip on CPU-only hosts)
timeout 120 python3 -m pytest -q -p no:cacheprovider --continue-on-collection-errors -n 8 \
  tests/runtimes/test_contract.py tests/build/test_tensorrt_gpu.py tests/checkpoints/test_checkpoint_formats.py \
  -m "gpu or not slow" -rs > "$OUT/pytest-gpu.log" 2>&1; tail -15 "$OUT/pytest-gpu.log"
# 2. the seed-000-shaped model (random weights), its FP32 export and onnxruntime INT8 file
timeout 120 python3 -c "
import pathlib, alexnet_deploy.bench.models as m
m.VARIANTS = m.VARIANTS[:1] + m.VARIANTS[2:3]
print(m.make_models(pathlib.Path('/tmp/bw')))" > "$OUT/models.log" 2>&1; tail -3 "$OUT/models.log"
# 3. host I/O (numpy in, logits out): CUDA beside onnxruntime on this host's CPU
timeout 150 python3 -m alexnet_deploy bench /tmp/bw/seed000.pth /tmp/bw/seed000.onnx /tmp/bw/seed000.int8.onnx --arch caffe-227 \
  --runtime torch-cuda,torch-cuda-fp16,ort --batch 1,32,256 --warmup 0.5 --duration 1 --rounds 2 --json "$OUT/host-io.json" > "$OUT/host-io.log" 2>&1; cat "$OUT/host-io.log"
# 4. inputs already on the GPU (model time only)
timeout 60 python3 -m alexnet_deploy bench /tmp/bw/seed000.pth --arch caffe-227 --runtime torch-cuda,torch-cuda-fp16 \
  --batch 1,32,256,1024 --io device --warmup 0.5 --duration 1 --rounds 2 --json "$OUT/device-io.json" > "$OUT/device-io.log" 2>&1; cat "$OUT/device-io.log"
