"""alexnet-deploy: trained PyTorch AlexNet checkpoints to ONNX, verified, and served.

The top-level package imports nothing heavy: torch is only needed for export and
verification against PyTorch (the ``torch`` extra).
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
