"""spec.logging.kafka.schemaRegistry: the CRD's block and its rules, the operator's reading of it
with the same words, every field under spec.logging.kafka described for `kubectl explain`, and
what a serving without a registry keeps: the seed's plain Avro, byte for byte."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from modelserving_operator.kafka.schema_registry import (
    REGISTRY_URL,
    RegistryCredentialsSpec,
    SchemaRegistrySpec,
    parse_schema_registry,
)
from modelserving_operator.kafka.security import KafkaCaSpec
from modelserving_operator.render.config_maps import render_sidecar_config
from modelserving_operator.settings import OperatorSettings
from modelserving_operator.spec import ServingSpec
from modelserving_sidecar.config import parse_config
from modelserving_sidecar.log.records import SpoolRecordMaker
from tests.support.exchanges import an_exchange

REPO = Path(__file__).resolve().parents[2]
CRD = yaml.safe_load((REPO / "crds" / "modelserving.io_modelservings.yaml").read_text())
SPEC = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
KAFKA = SPEC["properties"]["logging"]["properties"]["kafka"]
REGISTRY = KAFKA["properties"]["schemaRegistry"]
SETTINGS = OperatorSettings(kafka_bootstrap_servers="kafka:9092", sidecar_image="sidecar:1")

# The value of one exchange (an_exchange(): model version 3 of model 17 "mnist", 200, at
# 1700000000123 ms) as the sidecar wrote it before registries: plain Avro of the seed's seven
# fields, no framing. Written out once; any change to a raw record's bytes fails here.
GOLDEN_VALUE = (
    bytes.fromhex(
        "22"  # modelId 17
        "0a6d6e697374"  # modelName "mnist"
        "06"  # modelVersion 3
        "f6a1abfef962"  # requestTimestamp 1700000000123
        "9003"  # responseHttpCode 200
        "36"  # inferenceRequest: 27 bytes
    )
    + b'{"instances": [[1.0, 2.0]]}'
    + bytes.fromhex("30")  # inferenceResponse: 24 bytes
    + b'{"predictions": [[0.9]]}'
)


def serving(**kafka) -> ServingSpec:
    return ServingSpec.from_body(
        {
            "metadata": {"name": "mnist", "namespace": "demo", "uid": "u-1", "generation": 1},
            "spec": {
                "model": {"version": 3, "basePath": "s3://models/mnist"},
                "auth": {"mode": "none"},
                "logging": {"kafka": kafka},
            },
        }
    )


def rules(schema: dict) -> dict[str, str]:
    """A block's CEL rules and their messages (white space as a reader sees it)."""
    return {
        v["rule"]: " ".join(v["message"].split())
        for v in schema.get("x-kubernetes-validations", [])
    }


def undescribed(schema: dict, path: str) -> Iterator[str]:
    for key, prop in schema.get("properties", {}).items():
        here = f"{path}.{key}"
        if not prop.get("description"):
            yield here
        yield from undescribed(prop, here)


def test_every_field_under_spec_logging_kafka_says_what_it_is():
    assert list(undescribed(KAFKA, "spec.logging.kafka")) == []


def test_the_block_is_read_with_its_defaults():
    spec = serving(
        schemaRegistry={
            "url": "https://registry.example/apis/ccompat/v7",
            "ca": {"configMapName": "trust"},
            "credentials": {"secretName": "registry-user"},
        }
    )
    assert spec.logging.kafka.schema_registry == SchemaRegistrySpec(
        "https://registry.example/apis/ccompat/v7",
        KafkaCaSpec(config_map_name="trust", key="ca.crt"),
        RegistryCredentialsSpec("registry-user", "username", "password"),
    )
    assert serving().logging.kafka.schema_registry is None


def test_the_url_rule_is_the_operators_pattern():
    (rule,) = rules(REGISTRY["properties"]["url"])
    pattern = re.fullmatch(r"self\.matches\('(.*)'\)", rule)
    assert pattern is not None
    # CEL's string literal: a doubled backslash is one.
    assert pattern.group(1).replace("\\\\", "\\") == REGISTRY_URL.pattern


@pytest.mark.parametrize(
    ("url", "good"),
    [
        ("http://registry:8081", True),
        ("https://registry.example/apis/ccompat/v7", True),
        ("http://10.0.0.7:8081/", True),
        ("registry:8081", False),
        ("ftp://registry", False),
        ("https://user:secret@registry.example", False),
        ("https://registry.example/?token=x", False),
        ("https://", False),
    ],
)
def test_a_url_the_crd_refuses_the_operator_refuses_with_the_crds_words(url, good):
    assert bool(REGISTRY_URL.match(url)) is good
    if good:
        assert parse_schema_registry({"url": url}).url == url
        return
    with pytest.raises(ValueError) as refused:
        parse_schema_registry({"url": url})
    (message,) = rules(REGISTRY["properties"]["url"]).values()
    assert str(refused.value) == message


@pytest.mark.parametrize(
    ("block", "crd_block"),
    [
        ({"url": "https://r", "ca": {"secretName": "a", "configMapName": "b"}}, ("ca",)),
        ({"url": "https://r", "ca": {}}, ("ca",)),
        ({"url": "http://r", "ca": {"secretName": "a"}}, ()),
    ],
)
def test_combinations_that_cannot_work_are_refused_with_the_crds_words(block, crd_block):
    schema = REGISTRY
    for key in crd_block:
        schema = schema["properties"][key]
    with pytest.raises(ValueError) as refused:
        parse_schema_registry(block)
    assert str(refused.value) in rules(schema).values()


def test_without_a_registry_each_value_is_the_seeds_plain_avro_byte_for_byte():
    config = parse_config(render_sidecar_config(serving(), SETTINGS, 17))
    assert config.logging.confluent_schema_id is None
    record = SpoolRecordMaker(config.model, config.logging, "mnist-abc").make(an_exchange())
    assert record.value == GOLDEN_VALUE
