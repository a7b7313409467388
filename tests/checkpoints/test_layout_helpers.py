"""The layout table's helpers: lookup, matching, the texts of an ambiguity, and strict loading.

References are the layout classes themselves (their own ``state_dict``) and torch's
``load_state_dict``; messages are compared whole where a user reads them.
"""

from __future__ import annotations

import pytest
import torch

from alexnet_deploy.checkpoints import layouts
from alexnet_deploy.checkpoints.layouts import LAYOUTS
from alexnet_deploy.errors import LayoutError


def test_an_unknown_arch_is_refused_with_every_layout_name_as_the_fix():
    assert layouts.get_layout("caffe-227") is LAYOUTS["caffe-227"]
    with pytest.raises(LayoutError) as caught:
        layouts.get_layout("vgg")
    assert caught.value.problem == "unknown --arch 'vgg'."
    assert caught.value.fix == "choose one of: " + ", ".join(LAYOUTS)
    assert caught.value.fix.endswith("paper-hand-lrn, layers-fc, half-width")


def test_a_layout_match_lists_what_differs_four_at_a_time_and_assumes_1000_classes_without_a_classifier():
    layout = LAYOUTS["torchvision"]
    with torch.device("meta"):
        expected = layout.build(1000).state_dict()
    # The classifier's weight is 1-D, so the class count is unknown: shapes are checked as at 1000 classes.
    state = {k: torch.empty(v.shape, device="meta") for k, v in expected.items()}
    state["classifier.6.weight"] = torch.empty(10, device="meta")
    for k in ("features.0.weight", "features.0.bias", "features.3.weight", "features.3.bias", "features.6.weight"):
        del state[k]
    match = layouts.match_layout(layout, state)
    assert match.num_classes is None and not match.exact
    assert match.mismatched == [("classifier.6.weight", (10,), (1000, 4096))]
    assert match.diff() == ("missing features.0.weight, features.0.bias, features.3.weight, features.3.bias ...; "
                            "classifier.6.weight has shape [10], torchvision needs [1000, 4096]")
    assert match.diff(5).startswith("missing features.0.weight, features.0.bias, features.3.weight, features.3.bias, features.6.weight;")


def test_the_ambiguity_texts_name_each_layout_and_what_tells_them_apart():
    assert layouts.ambiguity_message(["caffe-227", "paper-224"]) == (
        f"caffe-227 (96 ch, pad 0, 227x227 input, {LAYOUTS['caffe-227'].source}) and "
        f"paper-224 (96 ch, pad 2, 224x224 input, {LAYOUTS['paper-224'].source})")
    assert layouts.distinguishing_hint(["caffe-227", "paper-224"]) == (
        "caffe-227 if the first Conv2d has padding=0 and images are cropped to 227; "
        "paper-224 if the first Conv2d has padding=2 and images are 224")
    # Layouts without a distinguishing note: the user's own model class decides.
    assert layouts.distinguishing_hint(["torchvision", "half-width"]) == "the training script's model class tells which"


def test_build_model_loads_strictly_in_eval_mode():
    layout = LAYOUTS["half-width"]
    reference = layout.build(3)
    state = reference.state_dict()
    model = layouts.build_model(layout, state, 3)
    assert not model.training
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    with pytest.raises(RuntimeError, match="Unexpected key"):
        layouts.build_model(layout, {**state, "extra.weight": torch.zeros(1)}, 3)
    with pytest.raises(RuntimeError, match="Missing key"):
        layouts.build_model(layout, {k: v for k, v in state.items() if k != "features.0.bias"}, 3)
