"""spec.tracing through the real API server and operator: a collector that is not a URL, or a
ratio out of bounds, is refused with what to fix; the spec's collector and ratio reach the
sidecar's config file."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from modelserving import api
from tests.support.servings import config_file, get_serving, is_ready, serving_manifest
from tests.support.waiting import wait_for

# One operator for the tests that only make servings and look at what it does with them.
SHARED_OPERATOR = True

COLLECTOR = "http://otel-collector.monitoring:4318/v1/traces"


def traced_serving(name: str, **tracing: Any) -> dict[str, Any]:
    return serving_manifest(name, auth={"mode": "none"}, tracing=tracing)


def test_a_collector_that_is_not_a_url_or_a_ratio_out_of_bounds_is_refused(crds, namespace):
    refusals = {
        "no scheme": (
            {"endpoint": "otel-collector:4318"},
            "spec.tracing.endpoint must be an http:// or https:// URL",
        ),
        "above one": ({"ratio": 1.5}, "spec.tracing.ratio"),
        "negative": ({"ratio": -0.1}, "spec.tracing.ratio"),
    }
    for case, (tracing, message) in refusals.items():
        with pytest.raises(ApiException) as refused:
            crds.create_namespaced_custom_object(
                api.GROUP, api.VERSION, namespace, api.PLURAL, traced_serving("bad", **tracing)
            )
        assert refused.value.status == 422, case
        assert message in " ".join(refused.value.body.split()), refused.value.body

    # A good one is taken, and a spec that leaves tracing out gets its defaults.
    crds.create_namespaced_custom_object(
        api.GROUP,
        api.VERSION,
        namespace,
        api.PLURAL,
        traced_serving("good", endpoint=COLLECTOR, ratio=1),
    )
    assert get_serving(crds, namespace, "good")["spec"]["tracing"] == {
        "endpoint": COLLECTOR,
        "ratio": 1,
    }
    crds.create_namespaced_custom_object(
        api.GROUP, api.VERSION, namespace, api.PLURAL, serving_manifest("silent")
    )
    assert get_serving(crds, namespace, "silent")["spec"]["tracing"] == {"ratio": 0}


def test_the_specs_collector_and_ratio_reach_the_sidecar(operator, crds, kube_client, namespace):
    # Given a serving that names a collector and samples 1% of the calls of its own
    crds.create_namespaced_custom_object(
        api.GROUP,
        api.VERSION,
        namespace,
        api.PLURAL,
        traced_serving("mnist", endpoint=COLLECTOR, ratio=0.01),
    )
    wait_for(lambda: is_ready(crds, namespace, "mnist"), timeout=60, what="the serving Ready")

    # Then its sidecars' config sends spans there at that ratio
    core, apps = client.CoreV1Api(kube_client), client.AppsV1Api(kube_client)
    config = yaml.safe_load(config_file(core, apps, namespace, "mnist", "sidecar.yaml") or "")
    assert config["tracing"] == {"endpoint": COLLECTOR, "ratio": 0.01}
