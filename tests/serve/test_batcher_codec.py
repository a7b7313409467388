"""The serve batcher and the KServe v2 codec, in-process (no server, no model): fast enough to run per mutant.

Expectations are independent of the code under test: rows computed with numpy from each
request's own input, hand-written protocol bodies and hand-computed responses.
"""

from __future__ import annotations

import json
import struct
import threading
import time
from contextlib import contextmanager

import numpy as np
import pytest

from alexnet_deploy.serve.batcher import Batcher, Share
from alexnet_deploy.serve.protocol import Codec, RequestError, loads

CHW = (3, 2, 2)


# ---- Batcher ----------------------------------------------------------------------------------------

class _GatedRuntime:
    """Holds each call until ``release`` is set; records each call's row count; output row = f(input row)."""

    def __init__(self, fail: Exception | None = None):
        self.release = threading.Event()
        self.calls: list[int] = []
        self.max_batches: list[int] = []
        self.fail = fail

    def run_all(self, batch, max_batch):
        self.release.wait(10)
        self.calls.append(len(batch))
        self.max_batches.append(max_batch)
        if self.fail is not None:
            raise self.fail
        return batch.reshape(len(batch), -1) * 2.0 + 1.0


@contextmanager
def _running(runtime: _GatedRuntime | None = None, released: bool = False, **settings):
    """A Batcher over ``runtime`` (a fresh gated one by default, open at once if ``released``), stopped afterwards."""
    runtime = runtime or _GatedRuntime()
    if released:
        runtime.release.set()
    batcher = Batcher(runtime, **settings)
    try:
        yield runtime, batcher
    finally:
        runtime.release.set()  # a held call must not keep stop() waiting
        batcher.stop()


def _expected(batch: np.ndarray) -> np.ndarray:
    return batch.reshape(len(batch), -1) * 2.0 + 1.0


def _rows(n: int, start: float) -> np.ndarray:
    return (np.arange(n * 12, dtype=np.float32).reshape(n, *CHW) + start * 1000).astype(np.float32)


def _submit_in_thread(batcher, batch, results, key, timeout=10.0, gone=None):
    def target():
        try:
            results[key] = batcher.submit(batch, timeout=timeout, gone=gone)
        except Exception as exc:  # noqa: BLE001 - recorded for the assertions
            results[key] = exc

    thread = threading.Thread(target=target)
    thread.start()
    return thread


def _wait_for(condition, seconds=5.0):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.005)


def test_multi_row_requests_batched_together_each_get_exactly_their_rows():
    with _running(max_batch=4, max_delay_s=0.05, max_queue=8) as (runtime, batcher):
        inputs = {"a": _rows(1, 1), "b": _rows(2, 2), "c": _rows(1, 3), "d": _rows(3, 4), "e": _rows(2, 5)}
        results: dict = {}
        threads = [_submit_in_thread(batcher, inputs["a"], results, "a")]
        _wait_for(lambda: batcher.jobs.qsize() == 0)  # the worker holds "a" (in the gated model or its wait for company)
        time.sleep(0.1)  # past max_delay: "a" is in the model alone
        for n, key in enumerate("bcde", start=1):
            threads.append(_submit_in_thread(batcher, inputs[key], results, key))
            _wait_for(lambda n=n: batcher.jobs.qsize() == n)  # queued in this order
        runtime.release.set()
        for thread in threads:
            thread.join(5)
        # "a" alone; b (2) + c (1) = 3 rows, d (3) does not fit the 4 and is first of the next call;
        # d (3) + e (2) does not fit either: e runs alone
        assert runtime.calls == [1, 3, 3, 2]
        assert runtime.max_batches == [4, 4, 4, 4]
        for key, batch in inputs.items():
            assert isinstance(results.get(key), np.ndarray), results.get(key)
            np.testing.assert_array_equal(results[key], _expected(batch), err_msg=key)
        assert batcher.execution_count == 4 and batcher.inference_count == 9 and batcher.dropped_count == 0


def test_rows_that_exactly_fill_the_batch_run_together():
    with _running(max_batch=5, max_delay_s=0.05, max_queue=8) as (runtime, batcher):
        inputs = {"a": _rows(1, 1), "b": _rows(2, 2), "c": _rows(3, 3), "d": _rows(2, 4)}
        results: dict = {}
        threads = [_submit_in_thread(batcher, inputs["a"], results, "a")]
        _wait_for(lambda: batcher.jobs.qsize() == 0)
        time.sleep(0.1)
        for n, key in enumerate("bcd", start=1):
            threads.append(_submit_in_thread(batcher, inputs[key], results, key))
            _wait_for(lambda n=n: batcher.jobs.qsize() == n)
        runtime.release.set()
        for thread in threads:
            thread.join(5)
        assert runtime.calls == [1, 5, 2]
        for key, batch in inputs.items():
            np.testing.assert_array_equal(results[key], _expected(batch), err_msg=key)


def test_a_job_that_gave_up_in_the_queue_is_skipped_while_collecting():
    with _running(max_batch=8, max_delay_s=0.2, max_queue=8) as (runtime, batcher):
        results: dict = {}
        threads = [_submit_in_thread(batcher, _rows(1, 0), results, "held")]
        _wait_for(lambda: batcher.jobs.qsize() == 0)
        time.sleep(0.3)  # "held" is in the gated model
        threads.append(_submit_in_thread(batcher, _rows(1, 1), results, "first"))
        _wait_for(lambda: batcher.jobs.qsize() == 1)
        threads.append(_submit_in_thread(batcher, _rows(1, 2), results, "gave-up", timeout=0.2))
        _wait_for(lambda: batcher.jobs.qsize() == 2)
        threads.append(_submit_in_thread(batcher, _rows(2, 3), results, "after"))
        _wait_for(lambda: batcher.jobs.qsize() == 3)
        threads[2].join(5)  # timed out while queued
        runtime.release.set()
        for thread in threads:
            thread.join(5)
        assert isinstance(results["gave-up"], RequestError)
        np.testing.assert_array_equal(results["first"], _expected(_rows(1, 1)))
        np.testing.assert_array_equal(results["after"], _expected(_rows(2, 3)))
        assert runtime.calls == [1, 3]  # "first" and "after" together; the abandoned job skipped, not a batch breaker
        assert batcher.dropped_count == 1


def test_jobs_arriving_within_the_delay_share_one_call():
    with _running(max_batch=8, max_delay_s=0.5, max_queue=8, released=True) as (runtime, batcher):
        results: dict = {}
        inputs = [_rows(2, i) for i in range(3)]
        threads = [_submit_in_thread(batcher, batch, results, i) for i, batch in enumerate(inputs)]
        for thread in threads:
            thread.join(5)
        assert runtime.calls == [6]  # collected within max_delay, not run one by one
        for i, batch in enumerate(inputs):
            np.testing.assert_array_equal(results[i], _expected(batch))


def test_a_full_batch_runs_without_waiting_out_the_delay():
    with _running(max_batch=2, max_delay_s=5.0, max_queue=8, released=True) as (runtime, batcher):
        start = time.monotonic()
        out = batcher.submit(_rows(2, 0), timeout=10)
        assert time.monotonic() - start < 2.0  # max_batch rows already: no wait for company
        np.testing.assert_array_equal(out, _expected(_rows(2, 0)))


def test_queue_bound_answers_503_and_cancelled_jobs_never_run():
    with _running(max_batch=1, max_delay_s=0.0, max_queue=2) as (runtime, batcher):
        results: dict = {}
        first = _submit_in_thread(batcher, _rows(1, 0), results, "held")
        _wait_for(lambda: batcher.jobs.qsize() == 0)
        time.sleep(0.05)
        late = _submit_in_thread(batcher, _rows(1, 1), results, "late", timeout=0.3)  # gives up while queued
        _wait_for(lambda: batcher.jobs.qsize() == 1)
        gone_flag = threading.Event()
        left = _submit_in_thread(batcher, _rows(1, 2), results, "left", gone=gone_flag.is_set)
        _wait_for(lambda: batcher.jobs.qsize() == 2)
        with pytest.raises(RequestError) as full:
            batcher.submit(_rows(1, 3), timeout=10)
        assert full.value.status == 503 and full.value.headers == {"Retry-After": "1"}
        assert "queue full" in str(full.value)
        late.join(5)
        assert isinstance(results["late"], RequestError) and results["late"].status == 503
        assert results["late"].headers == {"Retry-After": "1"}
        gone_flag.set()
        left.join(5)
        assert isinstance(results["left"], ConnectionAbortedError)
        runtime.release.set()
        first.join(5)
        np.testing.assert_array_equal(results["held"], _expected(_rows(1, 0)))
        _wait_for(lambda: batcher.dropped_count == 2)
        time.sleep(0.1)
        assert runtime.calls == [1]  # the two abandoned jobs never reached the model
        assert batcher.execution_count == 1 and batcher.inference_count == 1
        # the worker is alive and serves the next request
        np.testing.assert_array_equal(batcher.submit(_rows(1, 5), timeout=10), _expected(_rows(1, 5)))
        assert runtime.calls == [1, 1]


def test_a_job_cancelled_during_the_wait_for_company_is_not_run():
    with _running(max_batch=8, max_delay_s=0.6, max_queue=8, released=True) as (runtime, batcher):
        results: dict = {}
        gone = threading.Event()
        leaving = _submit_in_thread(batcher, _rows(1, 0), results, "leaving", gone=gone.is_set)
        _wait_for(lambda: batcher.jobs.qsize() == 0)  # taken by the worker, which now waits for company
        staying = _submit_in_thread(batcher, _rows(2, 1), results, "staying")
        gone.set()
        leaving.join(5)
        staying.join(5)
        assert isinstance(results["leaving"], ConnectionAbortedError)
        np.testing.assert_array_equal(results["staying"], _expected(_rows(2, 1)))
        assert runtime.calls == [2] and batcher.dropped_count == 1 and batcher.inference_count == 2


@pytest.mark.parametrize("error, message", [
    (RuntimeError("bad shape\nsecond line"), "inference failed: bad shape"),
    (RuntimeError(""), "inference failed: RuntimeError"),
    (ValueError("x" * 300), "inference failed: " + "x" * 200),
])
def test_a_failing_model_answers_every_request_in_the_batch_with_500(error, message):
    with _running(_GatedRuntime(fail=error), max_batch=4, max_delay_s=0.2, max_queue=8) as (runtime, batcher):
        results: dict = {}
        threads = [_submit_in_thread(batcher, _rows(1, i), results, i) for i in range(2)]
        _wait_for(lambda: batcher.jobs.qsize() == 0)
        runtime.release.set()
        for thread in threads:
            thread.join(5)
        for i in range(2):
            assert isinstance(results[i], RequestError) and results[i].status == 500
            assert str(results[i]) == message
        assert batcher.execution_count == 0 and batcher.inference_count == 0
        runtime.fail = None  # the worker survived
        np.testing.assert_array_equal(batcher.submit(_rows(1, 7), timeout=10), _expected(_rows(1, 7)))


def test_stop_runs_what_is_queued_then_ends_the_worker():
    runtime = _GatedRuntime()
    batcher = Batcher(runtime, max_batch=1, max_delay_s=0.0, max_queue=8)
    results: dict = {}
    threads = [_submit_in_thread(batcher, _rows(1, i), results, i) for i in range(3)]
    _wait_for(lambda: batcher.jobs.qsize() == 2)
    stopper = threading.Thread(target=batcher.stop)
    stopper.start()
    runtime.release.set()
    stopper.join(10)
    for thread in threads:
        thread.join(5)
    assert sorted(runtime.calls) == [1, 1, 1]
    for i in range(3):
        np.testing.assert_array_equal(results[i], _expected(_rows(1, i)))
    assert not batcher._thread.is_alive()


# ---- Codec: decoding ----------------------------------------------------------------------------------

LABELS = ["cat", "dog", "eel"]


def _codec(max_bytes: int = 10_000) -> Codec:
    return Codec("alexnet", "input", CHW, "logits", list(LABELS), max_bytes)


def _body(shape=None, data=None, datatype="FP32", name="input", **extra) -> bytes:
    spec = {"name": name, "datatype": datatype, "shape": [1, *CHW] if shape is None else shape}
    if data is not None:
        spec["data"] = data
    spec.update(extra.pop("spec", {}))
    return json.dumps({"inputs": [spec], **extra}).encode()


def test_metadata_is_the_v2_model_metadata():
    assert _codec().metadata() == {
        "name": "alexnet", "versions": ["1"], "platform": "onnxruntime_onnx",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 3, 2, 2]}],
        "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 3]}],
    }


def test_decode_json_flat_and_nested_data():
    values = [float(v) / 4 for v in range(24)]
    expected = np.array(values, np.float32).reshape(2, *CHW)
    request, array = _codec().decode(_body([2, *CHW], values, id="r1"), None)
    assert request["id"] == "r1"
    assert array.dtype == np.float32 and array.shape == (2, *CHW)
    np.testing.assert_array_equal(array, expected)
    _, nested = _codec().decode(_body([2, *CHW], expected.tolist()), None)
    np.testing.assert_array_equal(nested, expected)


def test_decode_binary_tensor():
    expected = np.linspace(-3, 3, 24, dtype=np.float32).reshape(2, *CHW)
    blob = expected.astype("<f4").tobytes()
    header = _body([2, *CHW], spec={"parameters": {"binary_data_size": len(blob)}})
    _, array = _codec().decode(header + blob, len(header))
    np.testing.assert_array_equal(array, expected)
    assert array.shape == (2, *CHW)


def _refused(body: bytes, header_length=None, codec=None) -> RequestError:
    with pytest.raises(RequestError) as info:
        (codec or _codec()).decode(body, header_length)
    return info.value


ONE = [0.5] * 12


@pytest.mark.parametrize("body, words", [
    (b"{not json", "not valid JSON"),
    (b"\xff\xfe", "not valid JSON"),
    (json.dumps([1]).encode(), '"inputs"'),
    (json.dumps({"inputs": {}}).encode(), '"inputs"'),
    (json.dumps({"inputs": []}).encode(), '"inputs"'),
    (json.dumps({"inputs": [{}, {}]}).encode(), '"inputs"'),
    (_body(data=ONE, outputs={"name": "logits"}), '"outputs" must be a list'),
    (_body(data=ONE, parameters=[1]), '"parameters" must be an object'),
    (_body(data=ONE, spec={"parameters": 3}), '"parameters" must be an object'),
    (_body(data=ONE, outputs=[{"name": "logits", "parameters": "x"}]), '"parameters" must be an object'),
    (_body(data=ONE, outputs=[{"name": "probs"}]), "unknown output 'probs'"),
    (_body(data=ONE, outputs=["probs"]), "unknown output 'probs'"),
    (_body(data=ONE, outputs=[{"name": "logits"}, {"name": "logits"}]), "requested 2 times"),
    (json.dumps({"inputs": [[1]]}).encode(), "each input must be an object"),
    (_body(data=ONE, name="x"), "unknown input 'x'"),
    (_body(data=ONE, datatype="FP16"), "input datatype 'FP16'"),
    (_body(data=ONE, datatype="INT8"), "input datatype 'INT8'"),
    (_body([1, 3, 2], ONE), "input shape [1, 3, 2]"),
    (_body([1, 3, 2, 2, 1], ONE), "input shape"),
    (_body([1, 3, 2, 3], ONE), "input shape"),
    (_body([1, 2, 2, 2], ONE), "input shape"),
    (_body([-1, 3, 2, 2], ONE), "input shape"),
    (_body([1.0, 3, 2, 2], ONE), "input shape"),
    (_body([True, 3, 2, 2], ONE), "input shape"),
    (_body("1,3,2,2", ONE), "input shape"),
    (_body([0, 3, 2, 2], []), "the batch is empty"),
    (_body(), 'no "data" list'),
    (_body(data="0.5"), 'no "data" list'),
    (_body(data=[]), "input has 0 values; shape [1, 3, 2, 2] needs 12"),  # not an IndexError (a 500)
    (_body(data=[0.5] * 11), "input has 11 values; shape [1, 3, 2, 2] needs 12"),
    (_body(data=[0.5] * 13), "input has 13 values"),
    (_body(data=[[0.5] * 11]), "input has 11 values"),
    (_body(data=["a"] * 12), "must be JSON numbers for datatype FP32"),
    (_body(data=[[0.5], [0.5, 0.5]] + [0.5] * 10), "not a list of numbers"),
    (_body(data=[1e39] + [0.5] * 11), "NaN or infinity"),
    (b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3, 2, 2], "data": [NaN, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]}]}', "NaN or infinity"),
])
def test_decode_refuses_with_400_naming_the_problem(body, words):
    error = _refused(body)
    assert error.status == 400 and error.headers == {}
    assert words in str(error), str(error)


def test_decode_accepts_zero_and_one_outputs_entry_and_parameters_objects():
    for extra in ({}, {"outputs": []}, {"outputs": None}, {"outputs": [{"name": "logits"}]}, {"outputs": ["logits"]},
                  {"parameters": {"binary_data_output": True}}, {"outputs": [{"name": "logits", "parameters": {"classification": 2}}]}):
        request, array = _codec().decode(_body(data=ONE, **extra), None)
        np.testing.assert_array_equal(array, np.full((1, *CHW), 0.5, np.float32))


def test_declared_size_is_checked_against_the_limit_before_the_data():
    limit = 2 * 12 * 4  # two images of 3x2x2 float32
    ok = _codec(limit).decode(_body([2, *CHW], [0.0] * 24), None)[1]
    assert ok.shape == (2, *CHW)
    error = _refused(_body([3, *CHW], "no data needed"), codec=_codec(limit))
    assert error.status == 413 and "144 bytes" in str(error) and str(limit) in str(error)


@pytest.mark.parametrize("header_length", [0, -1, 10_000])
def test_header_length_must_fit_the_body(header_length):
    body = _body(data=ONE)
    error = _refused(body, header_length)
    assert error.status == 400 and "Inference-Header-Content-Length" in str(error)


def test_header_length_equal_to_the_body_is_a_json_request():
    body = _body(data=ONE)
    _, array = _codec().decode(body, len(body))
    assert array.shape == (1, *CHW)


@pytest.mark.parametrize("declared, sent", [(48, 44), (44, 44), (52, 52), (48.0, 48), (True, 48), ("48", 48)])
def test_binary_data_size_must_match_shape_and_bytes(declared, sent):
    header = _body(spec={"parameters": {"binary_data_size": declared}})
    error = _refused(header + b"\x00" * sent, len(header))
    assert "binary_data_size" in str(error) and error.status == 400


def test_binary_tensor_with_nan_is_refused():
    blob = np.full((1, *CHW), np.nan, "<f4").tobytes()
    header = _body(spec={"parameters": {"binary_data_size": len(blob)}})
    assert "NaN or infinity" in str(_refused(header + blob, len(header)))


def test_loads_caps_integer_literals_and_objects():
    assert loads(b'{"a": 12345678901234567890}') == {"a": 12345678901234567890}  # 20 digits fit
    assert loads(b'{"a": -12345678901234567890}') == {"a": -12345678901234567890}
    with pytest.raises(RequestError, match="integer literal of 21 characters"):
        loads(b'{"a": 123456789012345678901}')
    nested = b"[" + b",".join([b"{}"] * 64) + b"]"
    assert loads(nested) == [{}] * 64
    with pytest.raises(RequestError, match="more than 64 JSON objects"):
        loads(b"[" + b",".join([b"{}"] * 65) + b"]")
    with pytest.raises(RequestError, match="not valid JSON|JSON arrays|nested"):
        loads(b"[" * 100_000)


# ---- Codec: encoding ----------------------------------------------------------------------------------

LOGITS = np.array([[1.5, 3.25, 2.0], [-1.0, -2.0, 0.125]], np.float32)


def test_encode_json_outputs():
    body, headers = _codec().encode({"id": "req-7"}, LOGITS)
    assert headers == {"Content-Type": "application/json"}
    assert json.loads(body) == {
        "model_name": "alexnet", "model_version": "1", "id": "req-7",
        "outputs": [{"name": "logits", "datatype": "FP32", "shape": [2, 3], "data": [1.5, 3.25, 2.0, -1.0, -2.0, 0.125]}],
    }
    body, _ = _codec().encode({"outputs": [{"name": "logits"}]}, LOGITS)
    assert "id" not in json.loads(body)


def _split(body: bytes, headers: dict) -> tuple[dict, bytes]:
    assert headers["Content-Type"] == "application/octet-stream"
    length = int(headers["Inference-Header-Content-Length"])
    return json.loads(body[:length]), body[length:]


@pytest.mark.parametrize("request_", [
    {"parameters": {"binary_data_output": True}},
    {"outputs": [{"name": "logits", "parameters": {"binary_data": True}}]},
    {"parameters": {"binary_data_output": False}, "outputs": [{"name": "logits", "parameters": {"binary_data": True}}]},
])
def test_encode_binary_outputs(request_):
    header, blob = _split(*_codec().encode(request_, LOGITS))
    assert header["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [2, 3], "parameters": {"binary_data_size": 24}}]
    assert blob == LOGITS.astype("<f4").tobytes()


@pytest.mark.parametrize("request_", [
    {"parameters": {"binary_data_output": True}, "outputs": [{"name": "logits", "parameters": {"binary_data": False}}]},
    {"parameters": {"binary_data_output": 1}},  # only JSON true asks for binary
    {"outputs": [{"name": "logits", "parameters": {"binary_data": "true"}}]},
])
def test_encode_json_when_binary_is_not_asked_for_exactly(request_):
    body, headers = _codec().encode(request_, LOGITS)
    assert headers == {"Content-Type": "application/json"}
    assert json.loads(body)["outputs"][0]["data"] == [1.5, 3.25, 2.0, -1.0, -2.0, 0.125]


def test_classification_extension_json():
    body, _ = _codec().encode({"outputs": [{"name": "logits", "parameters": {"classification": 2}}]}, LOGITS)
    (entry,) = json.loads(body)["outputs"]
    assert entry == {"name": "logits", "datatype": "BYTES", "shape": [2, 2],
                     "data": ["3.250000:1:dog", "2.000000:2:eel", "0.125000:2:eel", "-1.000000:0:cat"]}


def test_classification_ties_keep_index_order_and_count_is_capped():
    logits = np.array([[1.0, 2.0, 2.0]], np.float32)
    body, _ = _codec().encode({"outputs": [{"name": "logits", "parameters": {"classification": 10}}]}, logits)
    (entry,) = json.loads(body)["outputs"]
    assert entry["shape"] == [1, 3]
    assert entry["data"] == ["2.000000:1:dog", "2.000000:2:eel", "1.000000:0:cat"]
    body, _ = _codec().encode({"outputs": [{"name": "logits", "parameters": {"classification": 1}}]}, logits)
    assert json.loads(body)["outputs"][0]["data"] == ["2.000000:1:dog"]


def test_classification_extension_binary():
    header, blob = _split(*_codec().encode({"outputs": [{"name": "logits", "parameters": {"classification": 1, "binary_data": True}}]}, LOGITS))
    expected = b"".join(struct.pack("<I", len(s)) + s for s in (b"3.250000:1:dog", b"0.125000:2:eel"))
    assert header["outputs"] == [{"name": "logits", "datatype": "BYTES", "shape": [2, 1], "parameters": {"binary_data_size": len(expected)}}]
    assert blob == expected


@pytest.mark.parametrize("count", [0, -1, True, 1.0, "2", None])
def test_classification_count_must_be_a_positive_integer(count):
    with pytest.raises(RequestError) as info:
        _codec().encode({"outputs": [{"name": "logits", "parameters": {"classification": count}}]}, LOGITS)
    assert info.value.status == 400 and "positive integer" in str(info.value)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_outputs_are_a_422(bad):
    logits = LOGITS.copy()
    logits[1, 2] = bad
    with pytest.raises(RequestError) as info:
        _codec().encode({}, logits)
    assert info.value.status == 422


def test_classification_ties_over_many_classes_keep_index_order():
    """Python's sorted() is stable: the reference order for tied logits (numpy's default sort is not, past 16 items)."""
    rng = np.random.default_rng(0)
    values = rng.integers(0, 3, 64).astype(np.float32)
    codec = Codec("alexnet", "input", CHW, "logits", [f"c{i}" for i in range(64)], 10_000)
    body, _ = codec.encode({"outputs": [{"name": "logits", "parameters": {"classification": 64}}]}, values[None, :])
    expected = sorted(range(64), key=lambda i: -values[i])
    assert [int(s.split(":")[1]) for s in json.loads(body)["outputs"][0]["data"]] == expected


def test_string_outputs_entries_are_encoded_like_objects():
    """decode accepts ``"outputs": ["logits"]``; encode must answer it, not fail with a 500."""
    body, headers = _codec().encode({"outputs": ["logits"]}, LOGITS)
    assert headers == {"Content-Type": "application/json"}
    assert json.loads(body)["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [2, 3], "data": [1.5, 3.25, 2.0, -1.0, -2.0, 0.125]}]


def test_binary_output_is_fp32_whatever_the_runtime_returned():
    """The metadata declares FP32: a float64 result is sent as 4-byte floats, as declared."""
    header, blob = _split(*_codec().encode({"parameters": {"binary_data_output": True}}, LOGITS.astype(np.float64)))
    assert header["outputs"][0]["parameters"] == {"binary_data_size": 24}
    assert blob == LOGITS.astype("<f4").tobytes()


def test_non_finite_output_message():
    with pytest.raises(RequestError, match="non-finite outputs"):
        _codec().encode({}, np.full((1, 3), np.nan, np.float32))


def test_a_batcher_never_stopped_does_not_keep_the_process_alive():
    """The worker is a daemon thread: a server that exits without stop() (a crash path) still exits."""
    import subprocess
    import sys

    code = (
        "from alexnet_deploy.serve.batcher import Batcher\n"
        "class R:\n"
        "    def run_all(self, batch, max_batch): return batch\n"
        "Batcher(R(), 1, 0.0)\n"
        "print('exiting')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=10)
    assert result.returncode == 0 and result.stdout == "exiting\n", result.stderr


# ---- Codec: pre-parse limits and request fields (mutation-testing survivors) -------------------------

@pytest.mark.parametrize("tail", ["", "\\\\\\n"], ids=["to-the-end", "escaped-newline-at-the-end"])
def test_loads_of_a_body_of_unclosed_strings_answers_at_once(tail):
    """'"' then '\\"' repeated: every quote opens a string that never closes. Scanning each to the
    end made the pre-parse check quadratic (40 KB: 3 s holding the GIL; 4 MB: hours). The regex
    holds the GIL, so a thread cannot time it out: a child process with a timeout does."""
    import subprocess
    import sys

    code = (
        "from alexnet_deploy.serve.protocol import loads, RequestError\n"
        f"body = b'\"' + b'\\\\\"' * 2_000_000 + b'{tail}'\n"
        "try:\n    loads(body)\nexcept RequestError as exc:\n    print(exc.status)\n"
    )
    try:
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)  # linear: under a second
    except subprocess.TimeoutExpired:
        pytest.fail("loads() still scanning a 4 MB body of unclosed strings after 60 s")
    assert result.stdout.strip() == "400", result.stderr


def test_loads_caps_json_strings_at_1024():
    """At most 1024 strings ("more than 1024" is refused): exactly 1024 parse."""
    assert loads(json.dumps(["s"] * 1024).encode()) == ["s"] * 1024
    with pytest.raises(RequestError, match="more than 1024 JSON strings") as info:
        loads(json.dumps(["s"] * 1025).encode())
    assert info.value.status == 400


def _arrays(count: int, length: int) -> bytes:
    """``count`` JSON arrays ([[], [], ...], two deep) padded with spaces to ``length`` bytes."""
    body = b"[" + b",".join([b"[]"] * (count - 1)) + b"]"
    assert len(body) <= length
    return body + b" " * (length - len(body))


def test_loads_caps_arrays_at_64_plus_one_per_32_bytes():
    # 320 bytes allow 64 + 320 // 32 = 74 arrays
    assert loads(_arrays(74, 320)) == [[]] * 73
    with pytest.raises(RequestError, match="75 JSON arrays for 320 bytes"):
        loads(_arrays(75, 320))


def test_a_large_flat_json_request_decodes():
    """A real request is kilobytes of numbers in three arrays: the array cap grows with the body, never below 64."""
    expected = np.arange(100 * 12, dtype=np.float32).reshape(100, *CHW) / 8
    body = _body([100, *CHW], expected.reshape(-1).tolist())
    assert len(body) > 64 * 32 * 2
    _, array = _codec(100 * 12 * 4).decode(body, None)
    np.testing.assert_array_equal(array, expected)


@pytest.mark.parametrize("body", [
    b"[" * 33 + b"]" * 33,
    b"[ " * 33 + b"] " * 33,  # whitespace between brackets does not lower the depth
    b"[[]," + b"[" * 32 + b"]" * 33,  # depth 33 reached after a closed array
    b'{"a": ' * 16 + b"[" * 17 + b"]" * 17 + b"}" * 16,  # objects nest too
])
def test_loads_refuses_nesting_deeper_than_32(body):
    with pytest.raises(RequestError, match="nests 33 deep; at most 32") as info:
        loads(body)
    assert info.value.status == 400


def test_loads_accepts_nesting_of_32():
    value = loads(b"[" * 32 + b"]" * 32)
    for _ in range(31):
        (value,) = value
    assert value == []


@pytest.mark.parametrize("bad, words", [("0.5", "a string"), (True, "a boolean"), (None, "null"), ({}, "an object")])
def test_nested_data_with_non_numbers_is_refused(bad, words):
    """numpy reads "0.5" and true as numbers; Triton refuses them at any depth."""
    data = np.full((1, *CHW), 0.5).tolist()
    data[0][2][1][0] = bad
    error = _refused(_body(data=data))
    assert error.status == 400 and f"must be JSON numbers for datatype FP32; got {words}" in str(error), str(error)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32"])
def test_json_that_is_not_utf8_is_refused(encoding):
    """In UTF-16, '\\"' ends a string for a byte-level scan: 1000 arrays in 8 KB hid from the array cap."""
    text = '{"a": "\\"", "b": [' + ", ".join(["[]"] * 1000) + '], "c": "x"}'
    assert len(json.loads(text)["b"]) == 1000  # valid JSON
    with pytest.raises(RequestError, match="not valid JSON") as info:
        loads(text.encode(encoding))
    assert info.value.status == 400


def test_utf8_with_a_byte_order_mark_is_still_json():
    assert loads(b"\xef\xbb\xbf" + b'{"a": [1]}') == {"a": [1]}


@pytest.mark.parametrize("request_id", ["NaN", "Infinity", "-Infinity", "[NaN]", "7", "null", "{}"])
def test_request_id_must_be_a_string(request_id):
    """KServe v2: "id" is a string. It is echoed in the response, where a NaN was a 500 (not JSON)."""
    body = _body(data=ONE)[:-1] + b', "id": ' + request_id.encode() + b"}"
    error = _refused(body)
    assert error.status == 400 and '"id" must be a string' in str(error)


class _CountingBudget:
    def __init__(self):
        self.given = []

    def give(self, amount):
        self.given.append(amount)


def test_a_request_that_gives_up_keeps_its_memory_share_until_the_worker_drops_its_tensor():
    """The tensor of an abandoned request stays queued until the worker reaches it, so its share
    of --max-pending-mb stays counted until then (given back at once, new requests could queue
    max_queue x max_body bytes behind a stuck model)."""
    with _running(max_batch=1, max_delay_s=0.0, max_queue=8) as (runtime, batcher):
        results: dict = {}
        _submit_in_thread(batcher, _rows(1, 0), results, "held")  # occupies the worker until released
        _wait_for(lambda: batcher.jobs.qsize() == 0)
        budget = _CountingBudget()
        share = Share(budget, 1000)
        with pytest.raises(RequestError) as timed_out:
            batcher.submit(_rows(1, 1), timeout=0.2, share=share)
        assert timed_out.value.status == 503 and share.queued
        assert budget.given == []  # still queued: still counted
        runtime.release.set()
        _wait_for(lambda: budget.given == [1000])  # dropped by the worker, given back once
        assert batcher.dropped_count == 1 and runtime.calls == [1]
    full = _CountingBudget()
    with _running(max_batch=1, max_delay_s=0.0, max_queue=1) as (runtime, batcher):
        _submit_in_thread(batcher, _rows(1, 0), {}, "held")
        _wait_for(lambda: batcher.jobs.qsize() == 0)
        _submit_in_thread(batcher, _rows(1, 1), {}, "queued")
        _wait_for(lambda: batcher.jobs.qsize() == 1)
        refused = Share(full, 5)
        with pytest.raises(RequestError):
            batcher.submit(_rows(1, 2), timeout=1, share=refused)
        assert not refused.queued and full.given == []  # never queued: the caller gives it back
