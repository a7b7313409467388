"""``--model FILE.py:ClassName`` with ``--model-kwargs k=v,...``: the user's own class."""

from __future__ import annotations

import ast
import importlib.util
import inspect
import sys
from pathlib import Path
from typing import Any

from alexnet_deploy.errors import ModelFileError

CLASS_COUNT_PARAMS = ("num_classes", "nclass", "n_classes", "num_label", "num_labels", "classes", "nclasses", "class_num", "out_classes")


def parse_model_spec(spec: str) -> tuple[Path, str]:
    """Split ``path/to/model.py:ClassName``; ModelFileError if the shape is wrong."""
    path, sep, name = spec.rpartition(":")
    if not sep or not path or not name.isidentifier():
        raise ModelFileError(f"--model {spec!r} is not FILE.py:ClassName.", "e.g. --model train.py:AlexNet")
    return Path(path), name


def _split_top_level(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in text:
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    if current.strip():
        parts.append(current)
    return parts


def parse_model_kwargs(text: str | None) -> dict[str, Any]:
    """``"num_classes=5,dropout=0.3,c2=(96,128)"`` -> dict; values as Python literals, else strings."""
    if not text:
        return {}
    kwargs: dict[str, Any] = {}
    for item in _split_top_level(text):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise ModelFileError(f"--model-kwargs item {item.strip()!r} is not key=value.", "e.g. --model-kwargs num_classes=5,init_weights=False")
        try:
            kwargs[key] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            kwargs[key] = value.strip()
    return kwargs


def load_model_class(spec: str):
    """Import the class named by ``FILE.py:ClassName`` and return it."""
    import torch

    path, name = parse_model_spec(spec)
    if not path.is_file():
        raise ModelFileError(f"model file {path} does not exist.", "check the --model path")
    module_name = f"alexnet_user_model_{abs(hash(str(path.resolve())))}"
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    if module_spec is None or module_spec.loader is None:
        raise ModelFileError(f"model file {path} cannot be imported as Python.", "give a .py file")
    module = importlib.util.module_from_spec(module_spec)
    sys.path.insert(0, str(path.parent.resolve()))
    sys.modules[module_name] = module
    try:
        module_spec.loader.exec_module(module)
    except ModuleNotFoundError as exc:
        raise ModelFileError(
            f"model file {path} imports {exc.name!r}, which is not installed.",
            f"pip install {exc.name}, or remove that import from the file",
        ) from None
    except SystemExit:
        raise ModelFileError(f"model file {path} exits when imported.", "guard its script part with if __name__ == '__main__':") from None
    except Exception as exc:
        raise ModelFileError(
            f"model file {path} failed while being imported ({type(exc).__name__}: {str(exc)[:120]}).",
            "guard training code with if __name__ == '__main__': so importing only defines classes",
        ) from None
    finally:
        sys.path.remove(str(path.parent.resolve()))
    cls = getattr(module, name, None)
    if not (inspect.isclass(cls) and issubclass(cls, torch.nn.Module)):
        found = sorted(n for n, v in vars(module).items() if inspect.isclass(v) and issubclass(v, torch.nn.Module) and v.__module__ == module_name)
        raise ModelFileError(
            f"{path} has no nn.Module class named {name!r}.",
            f"classes found there: {', '.join(found)}" if found else "check the class name",
        )
    return cls


def class_count_param(cls) -> str | None:
    """The constructor parameter that sets the number of classes, if it has a usual name."""
    try:
        params = inspect.signature(cls.__init__).parameters
    except (TypeError, ValueError):
        return None
    return next((p for p in CLASS_COUNT_PARAMS if p in params), None)


def instantiate(cls, kwargs: dict[str, Any]):
    """``cls(**kwargs)`` in eval mode, with a readable error if the constructor refuses."""
    try:
        return cls(**kwargs).float().eval()
    except TypeError as exc:
        raise ModelFileError(f"cannot construct {cls.__name__}({_show(kwargs)}): {exc}.", "pass the constructor arguments with --model-kwargs key=value,...") from None
    except Exception as exc:
        raise ModelFileError(f"{cls.__name__}({_show(kwargs)}) raised {type(exc).__name__}: {str(exc)[:150]}.", "check --model-kwargs") from None


def _show(kwargs: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
