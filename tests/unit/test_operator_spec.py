"""The spec model: a ModelServing parsed once, with the CRD's defaults, and the defaults the
operator's settings and the sidecar share."""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelserving import api
from modelserving_operator.settings import SETTINGS, OperatorSettings
from modelserving_operator.spec import ServingSpec, SpecError, field_name
from modelserving_sidecar.config import LoggingConfig, LoggingMode
from modelserving_sidecar.log.policy import OversizePolicy

REPO = Path(__file__).resolve().parents[2]
CRD = yaml.safe_load((REPO / "crds" / "modelserving.io_modelservings.yaml").read_text())
SPEC_SCHEMA = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
ITEM = "[]"  # a path step into an array's first item


def body(**spec: Any) -> dict:
    return {
        "metadata": {"name": "mnist", "namespace": "demo", "uid": "u-1"},
        "spec": {
            "model": {"version": 1, "basePath": "s3://models/mnist"},
            "auth": {"mode": "none"},
            **spec,
        },
    }


def crd_defaults(schema: dict, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple, Any]]:
    """(path, default) of every field under `schema` whose CRD declares a `default:`."""
    for key, prop in schema.get("properties", {}).items():
        here = (*path, key)
        if "default" in prop:
            yield here, prop["default"]
        yield from crd_defaults(prop, here)
        if "items" in prop:
            yield from crd_defaults(prop["items"], (*here, ITEM))


def with_crd_defaults(schema: dict, value: Any) -> Any:
    """`value` as the API server stores it: the CRD's defaults filled in, nested ones too."""
    if isinstance(value, dict):
        for key, prop in schema.get("properties", {}).items():
            if key not in value and "default" in prop:
                value[key] = copy.deepcopy(prop["default"])
            if key in value:
                with_crd_defaults(prop, value[key])
    elif isinstance(value, list) and "items" in schema:
        for item in value:
            with_crd_defaults(schema["items"], item)
    return value


def model_value(spec: ServingSpec, path: tuple[str, ...]) -> Any:
    value: Any = spec
    for step in path:
        value = value[0] if step == ITEM else getattr(value, field_name(step))
    return value


def test_the_spec_models_defaults_are_the_crds():
    # Every array item and optional object present once, so that its fields' defaults show too.
    security = {
        "protocol": "SASL_SSL",
        "ca": {"secretName": "c"},
        "clientCertificate": {"secretName": "u"},
        "sasl": {"mechanism": "PLAIN", "passwordSecret": {"name": "u"}},
    }
    registry = {
        "url": "https://registry:8081",
        "ca": {"secretName": "c"},
        "credentials": {"secretName": "r"},
    }
    kafka = {"security": security, "schemaRegistry": registry}
    spec = ServingSpec.from_body(
        body(logging={"redact": [{"path": "instances[*].email"}], "kafka": kafka})
    )
    defaults = list(crd_defaults(SPEC_SCHEMA))
    assert len(defaults) > 20, "the walk found too few of the CRD's defaults"

    for path, default in defaults:
        where = "spec." + ".".join(path)
        value = model_value(spec, path)
        if default == {}:  # an object the API server always adds: its fields have their defaults
            assert dataclasses.is_dataclass(value), where
        else:
            assert value == default, f"{where}: the spec model says {value!r}, the CRD {default!r}"


def test_what_the_api_server_adds_changes_nothing():
    for written in (
        body(),
        body(logging={"redact": [{"path": "a"}], "kafka": {"topic": "t"}}),
        body(server={"batching": {"enabled": True}}, ingress={"enabled": True}),
    ):
        stored = with_crd_defaults(SPEC_SCHEMA, copy.deepcopy(written["spec"]))
        assert ServingSpec.from_body({**written, "spec": stored}) == ServingSpec.from_body(written)


def test_model_name_defaults_to_the_servings_name_and_one_version_is_served():
    spec = ServingSpec.from_body(body())
    assert (spec.model.name, spec.model.version) == ("mnist", 1)
    assert [v.number for v in spec.model.versions] == [1]
    named = ServingSpec.from_body(body(model={"name": "m", "version": 3, "basePath": "/m"}))
    assert (named.model.name, named.model.version) == ("m", 3)


def test_facts_of_a_serving_come_from_its_spec():
    spec = ServingSpec.from_body(body(service={"port": 9000}))
    assert spec.topic == "demo.mnist.inference"
    assert spec.endpoint == "http://mnist.demo.svc:9000/v1/models/mnist:predict"
    assert spec.auth.mode == "none"
    claim = ServingSpec.from_body(body(model={"version": 1, "basePath": "pvc://models/a/b"}))
    assert (claim.model.claim_name, claim.model.path_in_claim) == ("models", "a/b")
    assert spec.model.claim_name is None


def test_where_the_spec_is_silent_the_settings_decide_whether_it_logs():
    silent = ServingSpec.from_body(body())
    assert silent.logging_on(OperatorSettings(kafka_bootstrap_servers="k:1"))
    assert not silent.logging_on(OperatorSettings())  # no brokers anywhere
    assert not silent.logging_requested(OperatorSettings(log_mode="NONE"))
    asks = ServingSpec.from_body(
        body(logging={"mode": "ALL", "kafka": {"bootstrapServers": "b:1"}})
    )
    assert asks.logging_on(OperatorSettings(log_mode="NONE"))
    assert asks.bootstrap_servers(OperatorSettings(kafka_bootstrap_servers="k:1")) == "b:1"


@pytest.mark.parametrize("missing", ["version", "basePath"])
def test_a_spec_without_what_the_crd_requires_is_refused_by_name(missing):
    written = body()
    del written["spec"]["model"][missing]
    with pytest.raises(SpecError, match=f"spec.model.{missing}"):
        ServingSpec.from_body(written)


def test_the_operators_log_settings_default_to_the_shared_defaults():
    settings = OperatorSettings()
    assert (settings.log_mode, settings.log_max_payload_bytes) == (
        api.LOG_MODE,
        api.LOG_MAX_PAYLOAD_BYTES,
    )
    assert (settings.log_success_sample_rate, settings.log_error_sample_rate) == (
        api.LOG_SUCCESS_SAMPLE_RATE,
        api.LOG_ERROR_SAMPLE_RATE,
    )
    assert (settings.log_oversize_payload, settings.log_non_json_payload) == (
        api.LOG_OVERSIZE_PAYLOAD,
        api.LOG_NON_JSON_PAYLOAD,
    )
    assert settings.tfserving_image == f"{api.TFSERVING_IMAGE_REPOSITORY}:{api.TFSERVING_IMAGE_TAG}"
    assert settings.sidecar_image.startswith(f"{api.IMAGE_REPOSITORY}:")


def test_the_sidecars_log_defaults_are_the_shared_ones():
    """A sidecar config that leaves these out logs as a serving whose spec is silent would."""
    sidecar = LoggingConfig()
    assert api.LOG_MODE in {mode.value for mode in LoggingMode}
    assert (sidecar.success_sample_rate, sidecar.error_sample_rate) == (
        api.LOG_SUCCESS_SAMPLE_RATE,
        api.LOG_ERROR_SAMPLE_RATE,
    )
    assert sidecar.max_payload_bytes == api.LOG_MAX_PAYLOAD_BYTES
    assert sidecar.oversize_payload is OversizePolicy(api.LOG_OVERSIZE_PAYLOAD)
    # Unset in both: the sidecar drops a non-JSON payload where a redaction rule applies to it.
    assert (sidecar.non_json_payload, api.LOG_NON_JSON_PAYLOAD) == (None, "")


def test_the_crd_names_the_operators_defaults_as_they_are():
    """Descriptions such as "Defaults to the operator's setting (--log-max-payload-bytes,
    262144)" tell users the default: it must be the one the operator has."""
    text = " ".join((REPO / "crds" / "modelserving.io_modelservings.yaml").read_text().split())
    said = re.findall(r"\(--([a-z-]+), (\w+)", text)
    assert len(said) >= 5, "the CRD no longer names the operator's defaults"
    by_flag = {flag: name for name, (flag, *_) in SETTINGS.items()}
    defaults = OperatorSettings()
    for flag, word in said:
        default = getattr(defaults, by_flag[f"--{flag}"])
        shown = f"{default:g}" if isinstance(default, float) else str(default)
        assert word == shown, f"the CRD says --{flag} defaults to {word}, the operator {shown}"
