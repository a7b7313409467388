"""alexnet-deploy: trained PyTorch AlexNet checkpoints to ONNX, verified, and served.

The top-level package imports nothing heavy: torch is only needed for export and
verification against PyTorch (the ``torch`` extra).
"""

__version__ = "0.1.0"

__all__ = ["Classifier", "__version__"]


def __getattr__(name):
    # Lazy: `import alexnet_deploy` stays light; `from alexnet_deploy import Classifier` loads onnxruntime.
    if name == "Classifier":
        from alexnet_deploy.classifier import Classifier

        return Classifier
    raise AttributeError(f"module 'alexnet_deploy' has no attribute {name!r}")
