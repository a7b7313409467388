"""The Runtime template's shared behaviour: run_all chunks, pads to a model's batch limits, returns only real rows."""

from __future__ import annotations

import numpy as np



def test_run_all_pads_fixed_batches_and_keeps_real_rows():
    from alexnet_deploy.runtimes.base import Runtime, RuntimeInfo

    class Fixed(Runtime):
        calls = []

        def _info_impl(self):
            return RuntimeInfo("fake", "cpu", "fp32", "input", (4, 3, 2, 2), min_batch=4, max_batch=4)

        def _run_impl(self, batch):
            self.calls.append(len(batch))
            return batch.reshape(len(batch), -1)[:, :2]

    data = np.arange(6 * 12, dtype=np.float32).reshape(6, 3, 2, 2)
    out = Fixed().run_all(data, 32)
    assert Fixed.calls == [4, 4] and out.shape == (6, 2)
    np.testing.assert_array_equal(out, data.reshape(6, -1)[:, :2])


class _RowSumRuntime:
    """A stand-in backend with a TensorRT-like profile (8..16): logits are each row's sum."""

    @staticmethod
    def make(min_batch, max_batch):
        from alexnet_deploy.runtimes.base import Runtime, RuntimeInfo

        class RowSum(Runtime):
            def _info_impl(self):
                return RuntimeInfo("fake", "cpu", "fp32", "input", (None, 3, 2, 2), min_batch, max_batch)

            def _run_impl(self, batch):
                assert min_batch <= len(batch) <= max_batch
                return batch.reshape(len(batch), -1).sum(axis=1, keepdims=True)

        return RowSum()

def test_run_all_pads_chunks_below_the_minimum_batch():
    data = np.random.default_rng(0).standard_normal((37, 3, 2, 2)).astype(np.float32)
    with _RowSumRuntime.make(8, 16) as runtime:
        got = runtime.run_all(data, batch_size=32)  # chunks of 16, 16, 5 (padded to 8)
    np.testing.assert_allclose(got[:, 0], data.reshape(37, -1).sum(axis=1), rtol=1e-6)
