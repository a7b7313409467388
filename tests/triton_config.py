"""Triton's own ModelConfig protobuf, to parse the config.pbtxt files the toolkit writes (tests only).

A module of its own (tests/ is on sys.path through conftest.py), so any test can import it
whatever else was collected.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import pytest


@functools.lru_cache(maxsize=None)
def _model_config_module():  # loaded once per session
    tritonclient = pytest.importorskip("tritonclient")
    path = os.path.join(os.path.dirname(tritonclient.__file__), "grpc", "model_config_pb2.py")
    spec = importlib.util.spec_from_file_location("triton_model_config_pb2", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def model_config_class():
    """tritonclient's generated ModelConfig (loaded from its file: the grpc package itself needs grpcio)."""
    return _model_config_module().ModelConfig


def parse(path):
    from google.protobuf import text_format

    return text_format.Parse(path.read_text(), model_config_class()())  # strict: unknown fields fail
