"""`alexnet serve`: the KServe v2 protocol driven by Triton's own HTTP client and by plain HTTP."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import urllib.request
from urllib.parse import urlparse

import numpy as np
import pytest

http_client = pytest.importorskip("tritonclient.http")


def start_server(model, *args):
    env = dict(os.environ, COLUMNS="300")
    process = subprocess.Popen([sys.executable, "-m", "alexnet_deploy", "serve", str(model), "--port", "0", *map(str, args)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    line = process.stdout.readline()
    assert "serving" in line, process.stderr.read()
    url = urlparse(line.split(" at ", 1)[1].strip())
    return process, f"{url.hostname}:{url.port}"


@pytest.fixture(scope="module")
def server(half_width_onnx):
    process, address = start_server(half_width_onnx, "--max-delay-ms", 50, "--max-batch", 16)
    yield process, address
    if process.poll() is None:
        process.kill()


@pytest.fixture(scope="module")
def reference(half_width_onnx):
    from alexnet_deploy import Classifier

    return Classifier(half_width_onnx)


def _inputs(batch, binary=True):
    item = http_client.InferInput("input", list(batch.shape), "FP32")
    item.set_data_from_numpy(batch, binary_data=binary)
    return [item]


def test_health_metadata_and_logits(server, reference):
    _, address = server
    client = http_client.InferenceServerClient(address)
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("alexnet")
    meta = client.get_model_metadata("alexnet")
    assert meta["inputs"][0] == {"name": "input", "datatype": "FP32", "shape": [-1, 3, 224, 224]}
    batch = np.random.default_rng(0).standard_normal((3, 3, 224, 224), dtype=np.float32)
    expected = reference.logits(batch)
    for binary in (True, False):
        result = client.infer("alexnet", _inputs(batch, binary), outputs=[http_client.InferRequestedOutput("logits", binary_data=binary)])
        np.testing.assert_allclose(result.as_numpy("logits"), expected, rtol=1e-5, atol=1e-5)


def test_version_paths_and_classification_extension(server, reference):
    _, address = server
    client = http_client.InferenceServerClient(address)
    assert client.is_model_ready("alexnet", "1") and client.get_model_metadata("alexnet", "1")["name"] == "alexnet"
    batch = np.random.default_rng(2).standard_normal((2, 3, 224, 224), dtype=np.float32)
    logits = reference.logits(batch)
    for binary in (True, False):
        result = client.infer("alexnet", _inputs(batch), model_version="1", outputs=[http_client.InferRequestedOutput("logits", binary_data=binary, class_count=2)])
        classes = result.as_numpy("logits")
        assert classes.shape == (2, 2)
        for row, scores in zip(classes, logits):
            fields = [(v.decode() if isinstance(v, bytes) else v).split(":") for v in row]
            assert [int(f[1]) for f in fields] == list(np.argsort(-scores)[:2])
            assert [f[2] for f in fields] == [reference.labels[i] for i in np.argsort(-scores)[:2]]
            assert float(fields[0][0]) == pytest.approx(scores.max(), rel=1e-4, abs=1e-4)


def test_concurrent_clients_are_batched_and_answered(server, reference):
    _, address = server
    rng = np.random.default_rng(1)
    batches = [rng.standard_normal((1, 3, 224, 224), dtype=np.float32) for _ in range(16)]
    answers: list = [None] * len(batches)
    barrier = threading.Barrier(8)

    def work(worker):
        client = http_client.InferenceServerClient(address)
        barrier.wait()
        for index in range(worker, len(batches), 8):
            answers[index] = client.infer("alexnet", _inputs(batches[index])).as_numpy("logits")

    before = json.loads(urllib.request.urlopen(f"http://{address}/v2/models/alexnet/stats").read())["model_stats"][0]
    threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for batch, answer in zip(batches, answers):
        np.testing.assert_allclose(answer, reference.logits(batch), rtol=1e-4, atol=1e-4)
    after = json.loads(urllib.request.urlopen(f"http://{address}/v2/models/alexnet/stats").read())["model_stats"][0]
    assert after["inference_count"] - before["inference_count"] == 16
    assert after["execution_count"] - before["execution_count"] < 16  # some requests shared a model call


def _post(address, body: bytes, headers=None, path="/v2/models/alexnet/infer"):
    host, port = address.split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    connection.request("POST", path, body=body, headers=headers or {"Content-Type": "application/json"})
    response = connection.getresponse()
    return response.status, response.read()


def test_bad_requests_get_4xx_and_the_server_keeps_serving(server, reference):
    _, address = server
    good = {"name": "input", "shape": [1, 3, 224, 224], "datatype": "FP32", "data": [0.0] * (3 * 224 * 224)}
    cases = {
        "shape": {"inputs": [dict(good, shape=[1, 3, 32, 32])]},
        "datatype": {"inputs": [dict(good, datatype="INT32")]},
        "unknown input": {"inputs": [dict(good, name="image")]},
        "values": {"inputs": [dict(good, data=[0.0] * 10)]},
        "unknown output": {"inputs": [good], "outputs": [{"name": "probs"}]},
    }
    for word, request in cases.items():
        status, body = _post(address, json.dumps(request).encode())
        assert 400 <= status < 500 and word in json.loads(body)["error"], (word, status, body)
    status, body = _post(address, b"{not json")
    assert status == 400 and "not valid JSON" in json.loads(body)["error"]
    for malformed in ({"inputs": [good], "parameters": [1]}, {"inputs": [good], "outputs": 5}, {"inputs": [good], "outputs": True}, {"inputs": [dict(good, shape=[True, 3, 224, 224])]}, {"inputs": [dict(good, shape=[2 ** 52, 3, 224, 224])]}):
        assert 400 <= _post(address, json.dumps(malformed).encode())[0] < 500
    assert _post(address, b"[" * 100000)[0] == 400
    assert _post(address, b"{}", {"Content-Length": "-5"})[0] == 400
    status, body = _post(address, b"", {"Content-Length": str(1 << 30)})
    assert status == 413
    assert _post(address, b"{}", path="/v2/models/other/infer")[0] == 404
    status, body = _post(address, json.dumps({"inputs": [good]}).encode())
    assert status == 200
    np.testing.assert_allclose(json.loads(body)["outputs"][0]["data"], reference.logits(np.zeros((1, 3, 224, 224), np.float32))[0], rtol=1e-4, atol=1e-4)


def test_sigterm_answers_the_request_in_flight(half_width_onnx):
    process, address = start_server(half_width_onnx, "--max-delay-ms", 1500)
    batch = np.zeros((1, 3, 224, 224), np.float32)
    answer = {}

    def request():
        answer["logits"] = http_client.InferenceServerClient(address).infer("alexnet", _inputs(batch)).as_numpy("logits")

    thread = threading.Thread(target=request)
    thread.start()
    import time

    time.sleep(0.5)  # the request now waits in the batcher for company
    process.send_signal(signal.SIGTERM)
    thread.join(timeout=30)
    assert answer["logits"].shape == (1, 5)
    assert process.wait(timeout=30) == 0


def test_sigterm_stops_cleanly(server):
    process, address = server
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=20) == 0
    assert "stopped" in process.stderr.read()
