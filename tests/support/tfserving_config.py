"""TF Serving's ModelServerConfig message, to parse a rendered models.config as TF Serving does.

TF Serving reads --model_config_file with protobuf's text format into a ModelServerConfig
(tensorflow_serving/config/model_server_config.proto and the ServableVersionPolicy of
file_system_storage_path_source.proto). No package on PyPI ships those definitions without
TensorFlow, so the messages the operator writes are declared here with their real field
names, numbers and types; protobuf's own text-format parser then refuses what TF Serving's
would refuse (an unknown field, a string where an int64 belongs, two policies at once).
Fields the operator never writes (version_labels, logging_config, custom_model_config) are
left out: a config that names one fails to parse here, on purpose.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format

_F = descriptor_pb2.FieldDescriptorProto
_PACKAGE = "tensorflow.serving"


def _field(
    message: descriptor_pb2.DescriptorProto,
    name: str,
    number: int,
    kind: int,
    *,
    repeated: bool = False,
    type_name: str = "",
    oneof: int | None = None,
) -> None:
    field = message.field.add(name=name, number=number, type=kind)
    field.label = _F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL
    if type_name:
        field.type_name = f".{_PACKAGE}.{type_name}"
    if oneof is not None:
        field.oneof_index = oneof


def _file() -> descriptor_pb2.FileDescriptorProto:
    file = descriptor_pb2.FileDescriptorProto(
        name="modelserving_tests/model_server_config.proto", package=_PACKAGE, syntax="proto3"
    )
    source = file.message_type.add(name="FileSystemStoragePathSourceConfig")
    policy = source.nested_type.add(name="ServableVersionPolicy")
    latest = policy.nested_type.add(name="Latest")
    _field(latest, "num_versions", 1, _F.TYPE_UINT32)
    policy.nested_type.add(name="All")
    specific = policy.nested_type.add(name="Specific")
    _field(specific, "versions", 1, _F.TYPE_INT64, repeated=True)
    policy.oneof_decl.add(name="policy_choice")
    prefix = "FileSystemStoragePathSourceConfig.ServableVersionPolicy"
    for name, number, kind in (
        ("latest", 100, "Latest"),
        ("all", 101, "All"),
        ("specific", 102, "Specific"),
    ):
        _field(policy, name, number, _F.TYPE_MESSAGE, type_name=f"{prefix}.{kind}", oneof=0)

    config = file.message_type.add(name="ModelConfig")
    _field(config, "name", 1, _F.TYPE_STRING)
    _field(config, "base_path", 2, _F.TYPE_STRING)
    _field(config, "model_platform", 4, _F.TYPE_STRING)
    _field(config, "model_version_policy", 7, _F.TYPE_MESSAGE, type_name=prefix)
    config_list = file.message_type.add(name="ModelConfigList")
    _field(config_list, "config", 1, _F.TYPE_MESSAGE, repeated=True, type_name="ModelConfig")
    server = file.message_type.add(name="ModelServerConfig")
    server.oneof_decl.add(name="config")
    _field(server, "model_config_list", 1, _F.TYPE_MESSAGE, type_name="ModelConfigList", oneof=0)
    return file


_POOL = descriptor_pool.DescriptorPool()
_POOL.Add(_file())
ModelServerConfig: Any = message_factory.GetMessageClass(
    _POOL.FindMessageTypeByName(f"{_PACKAGE}.ModelServerConfig")
)


def parse_models_config(text: str) -> Any:
    """A models.config as TF Serving reads it; raises text_format.ParseError where it would fail."""
    return text_format.Parse(text, ModelServerConfig())
