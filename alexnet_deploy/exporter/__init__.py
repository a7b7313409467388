"""Checkpoints, layouts, LRN, torch -> ONNX export and the metadata record.

Submodules import torch lazily where they need it; ``metadata`` and ``labels`` are
torch-free so the runtime side can read what export wrote.
"""
