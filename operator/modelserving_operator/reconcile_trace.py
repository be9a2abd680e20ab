"""The operator's spans: one per reconcile of a serving, when a collector is named (the chart's
tracing.endpoint, --tracing-endpoint, or the OTEL_EXPORTER_OTLP_* variables), for
--reconcile-trace-ratio of them (all, by default: a reconcile runs once per change, not per
request). A reconcile starts its own trace (nothing asked for it with a trace context): its
span names the serving, what marked it (its own event or a child's), the API writes it made and
what it left for later (again after a failure, a status write that waits, or nothing).
"""

from __future__ import annotations

from collections.abc import Callable

from opentelemetry.trace import SpanKind

from modelserving_operator.runtime.controller import Again, Outcome, ReconcileOne
from modelserving_operator.runtime.workqueue import Key
from modelserving_sidecar.tracing.spans import Tracing, end_failed

SERVICE_NAME = "modelserving-operator"
SERVING = "modelserving.serving"
WRITES = "modelserving.reconcile.writes"
TRIGGER = "modelserving.reconcile.trigger"  # serving (its own event) or child
OUTCOME = "modelserving.reconcile.outcome"  # done, gone, again (a wait), retry (a failure)


def outcome_of(outcome: Outcome) -> str:
    if isinstance(outcome, Again):
        return "retry" if outcome.failed else "again"
    return "gone" if outcome == "gone" else "done"


def traced(reconcile: ReconcileOne, tracing: Tracing, writes: Callable[[], int]) -> ReconcileOne:
    """`reconcile` with a span around each run that `tracing` samples (its ratio);
    `writes` counts the operator's API writes so far."""

    async def run(key: Key, serving_event: bool) -> Outcome:
        if not tracing.wants(None):
            return await reconcile(key, serving_event)
        namespace, name = key
        attributes = {
            "k8s.namespace.name": namespace,
            SERVING: f"{namespace}/{name}",
            TRIGGER: "serving" if serving_event else "child",
        }
        span = tracing.server_span("reconcile", SpanKind.INTERNAL, None, None, attributes)
        before = writes()
        try:
            outcome = await reconcile(key, serving_event)
        except BaseException as exc:
            span.set_attribute(WRITES, writes() - before)
            end_failed(span, type(exc).__name__)
            raise
        # Writes of reconciles running beside this one count too: a bound, exact when alone.
        span.set_attribute(WRITES, writes() - before)
        said = outcome_of(outcome)
        span.set_attribute(OUTCOME, said)
        if said == "retry":
            end_failed(span, "retry")
        else:
            span.end()
        return outcome

    return run
