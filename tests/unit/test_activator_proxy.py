"""What the activator passes to a pod and back: every header but the hop-by-hop ones (and those
the Connection header names), the trace context and request id among those kept; the path and
query as the caller encoded them."""

from __future__ import annotations

from multidict import CIMultiDict

from modelserving_sidecar.activator.proxy import HOP_BY_HOP, passed_headers, pod_url


def test_hop_by_hop_headers_stay_and_the_rest_go_on():
    sent = CIMultiDict(
        [
            ("Host", "mnist.demo.svc:8080"),
            ("Authorization", "ApiKey k"),
            ("X-Request-Id", "r-1"),
            ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
            ("tracestate", "vendor=1"),
            ("Connection", "keep-alive, X-Hop"),
            ("Keep-Alive", "timeout=5"),
            ("X-Hop", "mine"),
            ("Transfer-Encoding", "chunked"),
            ("TE", "trailers"),
            ("Upgrade", "h2c"),
            ("Proxy-Authorization", "Basic eA=="),
            ("Accept", "application/json"),
            ("Accept", "text/plain"),
        ]
    )
    passed = passed_headers(sent, HOP_BY_HOP)
    assert list(passed.items()) == [
        ("Host", "mnist.demo.svc:8080"),
        ("Authorization", "ApiKey k"),
        ("X-Request-Id", "r-1"),
        ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        ("tracestate", "vendor=1"),
        ("Accept", "application/json"),
        ("Accept", "text/plain"),
    ]


def test_the_pod_url_keeps_the_path_and_query_as_sent():
    url = pod_url("127.0.9.1", 8080, "/v1/models/mnist:predict?x=%2F&y=a+b")
    assert str(url) == "http://127.0.9.1:8080/v1/models/mnist:predict?x=%2F&y=a+b"
    assert str(pod_url("fd00::1", 8080, "/healthz")) == "http://[fd00::1]:8080/healthz"
