"""``package --kserve``: the InferenceService is what KServe's own SDK models make, and YAML reads it back unchanged.

The KServe SDK check runs where ``kserve`` is installed (``pip install 'alexnet-deploy[kserve-test]'``,
best in its own environment: kserve 0.21 pins protobuf, pandas and psutil versions that other
extras do not share). Needs no torch, so it also runs with ``pytest --noconftest``.
"""

from __future__ import annotations

import pytest

from alexnet_deploy.deploy.kserve import RUNTIME, Resources, inference_service, service_name, to_yaml
from alexnet_deploy.errors import InputError

ARGS = dict(model_name="alexnet_int8", storage_uri="gs://models/alexnet-repo", namespace="vision", min_replicas=0, max_replicas=3,
            resources=Resources("2", "4Gi", 1))


def _sdk_manifest():
    """The same service built with KServe's own models: the independent reference."""
    kserve = pytest.importorskip("kserve", reason="kserve is not installed (pip install kserve==0.21.0, best in its own venv)")
    from kubernetes.client import V1ObjectMeta, V1ResourceRequirements

    isvc = kserve.V1beta1InferenceService(
        api_version=f"{kserve.constants.KSERVE_GROUP}/{kserve.constants.KSERVE_V1BETA1_VERSION}",
        kind=kserve.constants.KSERVE_KIND_INFERENCESERVICE,
        metadata=V1ObjectMeta(name="alexnet-int8", namespace="vision", annotations={"alexnet-deploy/triton-model": "alexnet_int8"}),
        spec=kserve.V1beta1InferenceServiceSpec(predictor=kserve.V1beta1PredictorSpec(
            min_replicas=0, max_replicas=3,
            model=kserve.V1beta1ModelSpec(
                model_format=kserve.V1beta1ModelFormat(name="triton"), protocol_version="v2", runtime="kserve-tritonserver",
                storage_uri="gs://models/alexnet-repo",
                resources=V1ResourceRequirements(requests={"cpu": "2", "memory": "4Gi"}, limits={"cpu": "2", "memory": "4Gi", "nvidia.com/gpu": "1"}),
            ),
        )),
    )
    return kserve, _without_container_name(kserve.ApiClient().sanitize_for_serialization(isvc))


def _without_container_name(data):
    """The SDK's ModelSpec inherits a container's required ``name`` and writes it as ''; KServe's own
    examples leave it out (the controller names the container kserve-container), and so do we."""
    model = data["spec"]["predictor"]["model"] if "spec" in data else data["predictor"]["model"]
    if model.get("name") == "":
        del model["name"]
    return data


def test_manifest_equals_kserve_sdk_serialization():
    kserve, expected = _sdk_manifest()
    assert inference_service(**ARGS) == expected


def test_manifest_round_trips_through_kserve_models():
    """Deserialised into KServe's spec models and serialised again, nothing is lost (an unknown or misspelt field would be)."""
    kserve, _ = _sdk_manifest()
    manifest = inference_service(**ARGS)
    client = kserve.ApiClient()
    # The SDK cannot deserialise a whole InferenceService (its kubernetes types are not in kserve.models,
    # kserve#2329), so the KServe part goes through KServe's models and resources through kubernetes'.
    predictor = dict(manifest["spec"]["predictor"])
    model = dict(predictor.pop("model"))
    resources = model.pop("resources")
    spec = client._ApiClient__deserialize({"predictor": {**predictor, "model": model}}, "V1beta1InferenceServiceSpec")
    assert isinstance(spec.predictor.model, kserve.V1beta1ModelSpec)
    assert _without_container_name(client.sanitize_for_serialization(spec)) == {"predictor": {**predictor, "model": model}}
    from kubernetes.client import ApiClient as KubeClient

    kube = KubeClient()
    assert kube.sanitize_for_serialization(kube._ApiClient__deserialize(resources, "V1ResourceRequirements")) == resources


def test_yaml_reads_back_the_manifest():
    yaml = pytest.importorskip("yaml")
    manifest = inference_service(**ARGS)
    assert yaml.safe_load(to_yaml(manifest)) == manifest
    model = manifest["spec"]["predictor"]["model"]
    assert (model["modelFormat"], model["protocolVersion"], model["runtime"], model["storageUri"]) == ({"name": "triton"}, "v2", RUNTIME, "gs://models/alexnet-repo")


@pytest.mark.parametrize("kwargs, word", [
    (dict(resources=Resources(cpu="two")), "--cpu"),
    (dict(min_replicas=3, max_replicas=2), "replicas"),
    (dict(service="Alexnet_Service"), "service name"),
    (dict(storage_uri=""), "--storage-uri"),
])
def test_bad_values_are_input_errors(kwargs, word):
    with pytest.raises(InputError, match=word):
        inference_service("alexnet", **kwargs)


def test_service_name_from_model_name():
    assert service_name("AlexNet_v1.int8") == "alexnet-v1-int8"
    assert service_name("1st") == "alexnet-1st"
