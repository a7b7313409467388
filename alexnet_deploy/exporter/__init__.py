"""Checkpoints, layouts, LRN, torch -> ONNX export, the metadata record, FP16/INT8 variants.

Submodules import torch lazily where they need it; ``metadata`` and ``labels`` are
torch-free so the runtime side can read what export wrote.
"""
