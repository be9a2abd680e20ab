"""The operator's own spans, through the real API server, operator and Jaeger: with a collector
named, each reconcile of a serving is a span of its own trace that names the serving, what
marked it and the writes it made; the first, from the serving's creation, made its children."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request

import pytest

from modelserving import api
from tests.support.jaeger_queries import tags
from tests.support.servings import is_ready, serving_manifest
from tests.support.waiting import wait_for


@pytest.fixture
def operator_flags(jaeger) -> list[str]:
    return ["--tracing-endpoint", jaeger.otlp_http]


def reconcile_spans(jaeger, serving: str) -> list[dict]:
    """The operator's reconcile spans Jaeger holds for `serving` (namespace/name)."""
    query = urllib.parse.urlencode(
        {"service": "modelserving-operator", "operation": "reconcile", "limit": 1000}
    )
    try:
        with urllib.request.urlopen(f"{jaeger.query_url}/api/traces?{query}", timeout=10) as found:
            traces = json.load(found)["data"] or []
    except urllib.error.HTTPError as exc:  # before the service's first span: not known yet
        if exc.code != 404:
            raise
        traces = []
    spans = [span for trace in traces for span in trace["spans"]]
    return [s for s in spans if tags(s).get("modelserving.serving") == serving]


def test_each_reconcile_is_a_span_naming_the_serving_and_its_writes(
    operator, crds, namespace, jaeger
):
    crds.create_namespaced_custom_object(
        api.GROUP, api.VERSION, namespace, api.PLURAL, serving_manifest("mnist")
    )
    wait_for(lambda: is_ready(crds, namespace, "mnist"), timeout=60, what="the serving Ready")

    spans = wait_for(
        lambda: reconcile_spans(jaeger, f"{namespace}/mnist"),
        timeout=30,
        what="the reconcile spans in Jaeger",
    )
    for span in spans:  # each its own trace: no reconcile was asked for with a context
        assert span["references"] == []
        assert tags(span)["k8s.namespace.name"] == namespace
        assert tags(span)["modelserving.reconcile.outcome"] in ("done", "again", "retry")
    # The first, from the serving's own event, made its children (and its modelId).
    first = min(spans, key=lambda span: span["startTime"])
    assert tags(first)["modelserving.reconcile.trigger"] == "serving"
    assert tags(first)["modelserving.reconcile.writes"] >= 5
