"""`alexnet serve` takes encoded images: base64 in JSON and Triton's binary BYTES, from tritonclient,
curl and raw sockets; the answer equals `Classifier.predict` on the same file; /metrics speaks
Prometheus' text format as prometheus_client's own parser reads it."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import urllib.request

import numpy as np
import pytest

from test_serve import _post, _raw, serving
from tiny_model import CLASSES, black_png, tiny_model, write_images

http_client = pytest.importorskip("tritonclient.http")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("model") / "tiny.onnx")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A JPEG, a PNG with alpha, a palette PNG and a grayscale JPEG: the decoder's usual paths."""
    return write_images(tmp_path_factory.mktemp("imgs"), 4, seed=11)[::-1]


@pytest.fixture(scope="module")
def server(model):
    # Small limits: a 2 MiB body, 24 MiB for requests in progress.
    yield from serving(model, "--max-delay-ms", 5, "--max-body-mb", 2, "--max-json-mb", 1, "--max-pending-mb", 24)


@pytest.fixture(scope="module")
def reference(model):
    from alexnet_deploy import Classifier

    return Classifier(model)


def _image_request(datas, **extra) -> bytes:
    spec = {"name": "image", "shape": [len(datas)], "datatype": "BYTES", "data": [base64.b64encode(d).decode() for d in datas]}
    return json.dumps({"inputs": [spec], **extra}).encode()


def test_images_in_json_equal_classifier_predict_on_the_same_files(server, reference, files):
    _, address = server
    datas = [p.read_bytes() for p in files]
    status, body = _post(address, _image_request(datas, outputs=[{"name": "logits", "parameters": {"classification": 3}}]))
    assert status == 200, body
    answer = json.loads(body)["outputs"][0]
    assert answer["shape"] == [len(files), 3]
    for row, path in zip(np.asarray(answer["data"]).reshape(len(files), 3), files):
        assert [field.split(":")[2] for field in row] == [label for label, _ in reference.predict(str(path), topk=3)]
    status, body = _post(address, _image_request(datas))
    np.testing.assert_allclose(np.asarray(json.loads(body)["outputs"][0]["data"]).reshape(len(files), -1),
                               reference.logits(reference.preprocess([str(p) for p in files])), rtol=1e-5, atol=1e-5)


def test_images_in_triton_binary_bytes_from_tritonclient(server, reference, files):
    _, address = server
    client = http_client.InferenceServerClient(address)
    meta = client.get_model_metadata("alexnet")
    assert {"name": "image", "datatype": "BYTES", "shape": [-1]} in meta["inputs"]
    from alexnet_deploy.record import read_record_from_path

    spec = reference.preprocessing
    published = meta["parameters"]["preprocessing"]
    assert (published["resize"], published["crop"], tuple(published["mean"]), tuple(published["std"]), published["interpolation"], published["resize_mode"]) == \
        (spec.resize, spec.crop, spec.mean, spec.std, spec.interpolation, spec.resize_mode)
    assert read_record_from_path(reference.path).preprocessing == spec
    for shape in ([len(files)], [len(files), 1]):  # [N], and [N, 1] as a Triton ensemble with max_batch_size declares it
        item = http_client.InferInput("image", shape, "BYTES")
        item.set_data_from_numpy(np.array([p.read_bytes() for p in files], dtype=object).reshape(shape), binary_data=True)
        result = client.infer("alexnet", [item], outputs=[http_client.InferRequestedOutput("logits", binary_data=True)])
        np.testing.assert_allclose(result.as_numpy("logits"), reference.logits(reference.preprocess([str(p) for p in files])), rtol=1e-5, atol=1e-5)


def test_bad_images_are_4xx_naming_the_image_and_the_server_keeps_serving(server, files, tmp_path):
    _, address = server
    good = files[0].read_bytes()
    cases = [
        (_image_request([good, b"not an image"]), 400, "image 1: cannot be decoded"),
        (json.dumps({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": ["%%% not base64"]}]}).encode(), 400, "not base64"),
        (json.dumps({"inputs": [{"name": "image", "shape": [1], "datatype": "FP32", "data": ["x"]}]}).encode(), 400, "takes datatype BYTES"),
        (json.dumps({"inputs": [{"name": "image", "shape": [2], "datatype": "BYTES", "data": ["eA=="]}]}).encode(), 400, "a list of 2 base64 strings"),
        (_image_request([black_png(tmp_path / "thin.png", 100_000, 1).read_bytes()]), 413, "over the limit"),
        # 4000x4000 decodes into 122 MiB of pixels (decoded and converted, 4 bytes each): more than the 24 MiB for requests in progress
        (_image_request([black_png(tmp_path / "big.png", 4000, 4000).read_bytes()]), 413, "needs 122 MiB to decode; with its request's"),
    ]
    for body, status, words in cases:
        got, answer = _post(address, body)
        assert got == status and words in json.loads(answer)["error"], (words, got, answer[:300])
    # Binary BYTES whose element lengths do not add up to the data sent.
    for blob, words in ((b"\x02\x00\x00\x00ab\xff\x00\x00\x00", "image 1 declares 255 bytes; only 0 follow"),
                        (b"\x02\x00\x00\x00ab\xff\xff", "holds 1 of the 2 images"),
                        (b"\x01\x00\x00\x00a\x01\x00\x00\x00bextra", "5 bytes follow the 2 images")):
        header = json.dumps({"inputs": [{"name": "image", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": len(blob)}}]}).encode()
        got, answer = _post(address, header + blob, {"Inference-Header-Content-Length": str(len(header))})
        assert got == 400 and words in json.loads(answer)["error"], (words, answer)
    assert _post(address, _image_request([good]))[0] == 200


def test_metrics_count_requests_and_time_the_stages(server, files):
    from prometheus_client.parser import text_string_to_metric_families

    _, address = server

    def scrape() -> dict:
        text = urllib.request.urlopen(f"http://{address}/metrics", timeout=10).read().decode()
        return {family.name: family for family in text_string_to_metric_families(text)}

    def value(families, name, **labels) -> float:
        """A counter family's total over the samples with ``labels`` (the parser names the family without _total)."""
        family = families[name]
        assert family.type == "counter"
        return sum(s.value for s in family.samples if s.name == name + "_total" and all(s.labels.get(k) == v for k, v in labels.items()))

    before = scrape()
    assert _post(address, _image_request([p.read_bytes() for p in files]))[0] == 200
    assert _post(address, b"{broken")[0] == 400
    after = scrape()
    assert value(after, "alexnet_requests", endpoint="infer", code="200") - value(before, "alexnet_requests", endpoint="infer", code="200") == 1
    assert value(after, "alexnet_requests", endpoint="infer", code="400") - value(before, "alexnet_requests", endpoint="infer", code="400") == 1
    assert value(after, "alexnet_images_decoded") - value(before, "alexnet_images_decoded") == len(files)
    for stage in ("queue", "preprocess", "infer"):
        family = after[f"alexnet_request_{stage}_seconds"]
        assert family.type == "histogram"
        counts = {s.labels["le"]: s.value for s in family.samples if s.name.endswith("_bucket")}
        assert counts["+Inf"] >= 1 and list(counts.values()) == sorted(counts.values())  # cumulative buckets
        assert all(s.labels["model"] == "alexnet" for s in family.samples)


def test_readme_curl_example_sends_a_jpeg(server, reference, files, tmp_path):
    """The README's curl line, run as written (with this server's address and a test JPEG)."""
    from pathlib import Path

    if shutil.which("curl") is None or shutil.which("base64") is None:
        pytest.skip("curl and base64 are not installed here")
    root = Path(__file__).resolve().parents[2]
    readme = (root / "README.md").read_text() + "".join(p.read_text() for p in sorted((root / "docs").glob("*.md")))
    block = readme.split("<!-- serve: curl example -->", 1)[1].split("```sh", 1)[1].split("```", 1)[0].strip()
    jpeg = tmp_path / "cat.jpg"
    from PIL import Image

    Image.open(files[0]).convert("RGB").save(jpeg, quality=92)
    _, address = server
    command = block.replace("localhost:8000", address)
    result = subprocess.run(["bash", "-c", command], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    best = answer["outputs"][0]["data"][0].split(":")
    assert best[2] == reference.predict(str(jpeg), topk=1)[0][0] and best[2] in CLASSES


def test_health_is_answered_while_every_slot_is_held(model):
    import socket
    import time

    for process_address in serving(model, "--max-connections", 2, "--request-timeout-s", 30):
        _, address = process_address
        host, port = address.split(":")
        held = [socket.create_connection((host, int(port)), timeout=5) for _ in range(2)]
        for sock in held:
            sock.send(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n")  # headers never finished
        time.sleep(0.3)
        try:
            for _ in range(5):  # a probe every time, not once
                assert _raw(address, b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n", timeout=5).startswith(b"HTTP/1.1 200")
        finally:
            for sock in held:
                sock.close()


def test_model_config_endpoint_answers_like_triton(server, reference):
    """GET /v2/models/NAME/config (tritonclient's get_model_config) used to answer 404 "unknown model"."""
    _, address = server
    client = http_client.InferenceServerClient(address)
    config = client.get_model_config("alexnet")
    assert config["name"] == "alexnet" and config["max_batch_size"] == 32
    assert config["input"] == [{"name": "input", "data_type": "TYPE_FP32", "dims": [3, 16, 16]}, {"name": "image", "data_type": "TYPE_STRING", "dims": [1]}]
    assert config["output"] == [{"name": "logits", "data_type": "TYPE_FP32", "dims": [len(reference.labels)]}]
    assert config["dynamic_batching"] == {"max_queue_delay_microseconds": 5000}
    assert json.loads(config["parameters"]["preprocessing"]["string_value"])["crop"] == 16
    from google.protobuf import json_format

    from triton_config import model_config_class

    json_format.ParseDict(config, model_config_class()())  # Triton's own ModelConfig accepts every field


def test_a_large_json_request_that_fits_is_served_not_told_to_retry(server, tmp_path):
    """The JSON body's share (12x its size while it is parsed) is given back once the images are out
    of it: a request that fits the budget must not get 503 "retry shortly" on an idle server, forever."""
    from PIL import Image

    noise = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (450, 450, 3), dtype=np.uint8)).save(noise)
    body = _image_request([noise.read_bytes(), black_png(tmp_path / "black.png", 1400, 1400).read_bytes()])
    assert 700_000 < len(body) < 1 << 20  # 12x of it and the black image's 15 MiB decoding were over the 24 MiB
    for _ in range(2):
        status, answer = _post(server[1], body)
        assert status == 200, answer[:300]


def test_a_closed_server_leaves_no_thread_or_socket_behind(model):
    import os
    import threading

    from alexnet_deploy.serve.http import make_server
    from alexnet_deploy.serve.model import ModelService

    def counts():
        return len(os.listdir("/proc/self/fd")), sorted(t.name for t in threading.enumerate() if t.name.startswith("alexnet-"))

    service = ModelService(model, "alexnet", 8, 1.0)
    try:
        before = counts()
        for _ in range(3):
            server = make_server(service, "127.0.0.1", 0)
            server.server_close()
        assert counts() == before
    finally:
        service.close()


def test_overflow_answers_probes_through_a_flood_and_only_http_1(model, monkeypatch):
    """A probe that arrives amid a flood is read before it is evicted; bare-LF probes are answered
    as the main path answers them; a request line of another HTTP version is not."""
    import socket
    import threading

    from alexnet_deploy.serve import http as serve_http
    from alexnet_deploy.serve.limits import Limits
    from alexnet_deploy.serve.model import ModelService

    monkeypatch.setattr(serve_http._Overflow, "CAPACITY", 4)
    limits = Limits(max_connections=1)
    service = ModelService(model, "alexnet", 8, 1.0, limits=limits)
    server = serve_http.make_server(service, "127.0.0.1", 0, limits)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    address = f"127.0.0.1:{server.server_address[1]}"
    held = socket.create_connection(("127.0.0.1", server.server_address[1]))
    held.send(b"GET /v2/health/live HTTP/1.1\r\n")  # the one slot, never finished
    try:
        for _ in range(5):
            flood = [socket.create_connection(("127.0.0.1", server.server_address[1])) for _ in range(30)]
            answer = _raw(address, b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n", timeout=5)
            for sock in flood:
                sock.close()
            assert answer.startswith(b"HTTP/1.1 200"), answer[:100]
        assert _raw(address, b"GET /v2/health/live HTTP/1.1\nHost: x\n\n", timeout=5).startswith(b"HTTP/1.1 200")
        assert _raw(address, b"GET /v2/health/live HTTP/9.9\r\nHost: x\r\n\r\n", timeout=5).startswith(b"HTTP/1.1 503")
    finally:
        held.close()
        server.shutdown()
        server.server_close()
        service.close()


def test_decoding_stops_when_the_client_has_gone(model, tmp_path):
    from alexnet_deploy.serve.model import ModelService
    from alexnet_deploy.serve.protocol import EncodedImages

    images = EncodedImages(p.read_bytes() for p in write_images(tmp_path / "imgs", 5))
    service = ModelService(model, "alexnet", 8, 1.0)
    asked = []

    def gone():
        asked.append(1)
        return len(asked) > 2  # the client hangs up while the second image is decoded

    try:
        with pytest.raises(ConnectionAbortedError):
            service.preprocess(images, gone=gone)
        assert len(asked) == 3 and service.metrics.images == 0  # two decoded, then stopped
    finally:
        service.close()
