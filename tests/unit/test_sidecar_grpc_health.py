"""The health check's two messages as the sidecar reads and writes them by hand: the bytes of
grpcio-health-checking's own messages (what Kubernetes, Envoy and gRPC clients send and read),
for every status and any service name."""

from __future__ import annotations

import pytest
from grpc_health.v1 import health_pb2
from hypothesis import given
from hypothesis import strategies as st

from modelserving_sidecar.grpc.health import HEALTH_SERVICE, ServingStatus, requested_service
from modelserving_sidecar.grpc.wire import WireError


@given(service=st.text(max_size=200))
def test_the_service_asked_about_is_read_from_the_request_clients_send(service: str) -> None:
    request = health_pb2.HealthCheckRequest(service=service).SerializeToString()
    assert requested_service(request) == service


def test_every_status_is_written_as_the_response_clients_read() -> None:
    names = health_pb2.HealthCheckResponse.ServingStatus.keys()
    assert [s.name for s in ServingStatus] == list(names)
    for status in ServingStatus:
        answer = health_pb2.HealthCheckResponse.FromString(status.encoded())
        assert answer.status == status.value
        expected = health_pb2.HealthCheckResponse(status=status.value).SerializeToString()
        assert status.encoded() == expected


def test_the_service_name_is_grpcs_own() -> None:
    assert health_pb2.DESCRIPTOR.services_by_name["Health"].full_name == HEALTH_SERVICE


@pytest.mark.parametrize("data", [b"\x0a\x05ab", b"\x08\x01", b"\x0a\x02\xff\xfe"])
def test_a_request_that_is_not_a_health_check_request_is_refused(data: bytes) -> None:
    with pytest.raises(WireError):
        requested_service(data)
