"""The benchmark's results as types: what each part measured, read from bench/results.json.

The JSON is the record (written by `make bench` as the parts return it); these frozen
dataclasses are how the report reads it. A figure a run did not measure (a results.json from
before it) is None; a measurement that failed is `Failed` with its error. `from_json` takes the
JSON's own keys (field names are its keys) and leaves out keys the report does not draw."""

from __future__ import annotations

import dataclasses
import json
import math
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

from bench.harness.stats import LatencyResult

T = TypeVar("T")

# A field whose JSON null means "not within the deadline" (not "not measured"): read as inf.
NULL_IS_INF = {"null": math.inf}


@dataclass(frozen=True)
class Failed:
    """A run or measurement that did not finish: what went wrong."""

    error: str
    # Where it ran in its part's order, and the load average (1, 5, 15 min) as it began.
    run_order: int | None = None
    load_average: list[float] | None = None


@dataclass(frozen=True)
class Skipped:
    """A part that did not run (a tool or the environment missing) or failed whole: why."""

    notes: list[str]


@dataclass(frozen=True)
class Machine:
    cpu: str
    cores: int
    memory_gib: float
    kernel: str
    pinning: str


# ------------------------------------------------------------------ request path and gRPC


@dataclass(frozen=True)
class Saturation:
    """The saturated run (wrk over REST, ghz over gRPC)."""

    rps: float
    requests: int


@dataclass(frozen=True)
class Added:
    """Latency added over the direct call of the same protocol in the same pass, ms."""

    p50: float
    p90: float
    p99: float


@dataclass(frozen=True)
class Records:
    """The gRPC sidecar's records on the topic against the calls it answered."""

    calls_answered: int
    on_topic: int
    duplicates: int | None = None
    lost: int | None = None


@dataclass(frozen=True)
class Pass:
    """One configuration measured in one pass: saturated, then at each fixed rate."""

    rps_per_core: float  # requests/s over the share of its core the proxy used
    saturation: Saturation
    cpu_share: float
    rss_peak_mib: float
    latency: dict[str, LatencyResult]  # by rate ("200", "1000")
    cpu_us_at_rate: dict[str, float] = field(default_factory=dict)
    added_ms: dict[str, Added] | None = None  # None: the direct call of that pass failed
    rss_after_mib: float | None = None
    loadavg_1m: float | None = None
    records: Records | None = None


@dataclass(frozen=True)
class PathPart:
    """The request path or the gRPC path: each configuration's passes, in the order run."""

    configurations: list[str]
    results: dict[str, list[Pass | Failed]]
    groups: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


# ------------------------------------------------------------------ outages and the crash


@dataclass(frozen=True)
class SinkOutage:
    """KServe's agent, logger on, with its HTTP sink down."""

    rate: int
    seconds: float
    sink_down_seconds: float
    requests_answered: int
    events_expected: int
    events_delivered: int
    events_lost: int
    rss_peak_mib: float
    latency: LatencyResult


@dataclass(frozen=True)
class BrokerOutage:
    """Our sidecar, log on, with the Kafka broker down."""

    rate: int
    seconds: float
    broker_down_seconds: float
    requests_answered: int
    records_delivered: int
    records_lost: int
    rss_peak_mib: float
    latency: LatencyResult
    records_on_topic_with_duplicates: int | None = None


@dataclass(frozen=True)
class OutagePart:
    kserve_agent: SinkOutage | Failed | None = None
    sidecar: BrokerOutage | Failed | None = None


@dataclass(frozen=True)
class Crash:
    """The sidecar killed with SIGKILL under load and started again on its spool."""

    durability: str
    rate_asked: int
    rate_reached: int
    answered_before_kill: int
    records_lost: int
    lost_answered_within_ms_of_kill: int
    records_resent: int
    max_in_flight_records: int


@dataclass(frozen=True)
class CrashPart:
    buffered: Crash | Failed | None = None
    spooled: Crash | Failed | None = None


# ------------------------------------------------------------------ the inference log


@dataclass(frozen=True)
class LogRun:
    """One producer compression: records into the broker, flat out."""

    compression: str
    records: int
    record_value_bytes: int
    seconds_to_all_acked: float
    records_per_s: float
    submit_us_per_record: float
    encode_us_per_record: float
    records_on_topic: int
    distinct_records_on_topic: int
    seconds_to_submit: float | None = None
    default: bool | None = None  # None: a run from before zstd was the default (gzip was)


@dataclass(frozen=True)
class FailedLogRun:
    error: str
    compression: str = "?"
    default: bool | None = None


@dataclass(frozen=True)
class LogPart:
    runs: list[LogRun | FailedLogRun]
    notes: list[str] = field(default_factory=list)


# ------------------------------------------------------------------ the operator


@dataclass(frozen=True)
class OperatorMetrics:
    """What the operator says of its own work (its /metrics), per serving where so named."""

    api_writes_per_serving: float
    api_writes: dict[str, int] = field(default_factory=dict)
    reconciles_per_serving: float | None = None
    reconcile_seconds_mean: float | None = None
    queue_wait_seconds_mean: float | None = None
    queue_depth_peak: int | None = None
    queue_oldest_wait_peak_seconds: float | None = None
    scrapes: int | None = None


@dataclass(frozen=True)
class OperatorRun:
    """The operator with n servings applied at once, then restarted over them."""

    servings: int | None = None
    ready_timeout_seconds: float | None = None
    seconds_to_apply: float | None = None
    ready: int | None = None
    deployments_available: int | None = None
    seconds_to_all_ready: float | None = None  # None: not all within ready_timeout_seconds
    operator_cpu_seconds: float | None = None
    control_plane_cpu_seconds: dict[str, float] | None = None
    operator: OperatorMetrics | None = None
    events_per_serving: float | None = None  # the operator's (its ModelServings')
    cluster_events_per_serving: float | None = None  # every Event of the namespace
    operator_rss_peak_mib: float | None = None
    operator_rss_settled_mib: float | None = None
    # None: not measured (a run from before it); inf: not all reconciled within the deadline.
    restart_seconds_to_reconcile_all: float | None = field(default=None, metadata=NULL_IS_INF)
    operator_rss_restart_peak_mib: float | None = None
    restart_objects_written: int | None = None
    restart_written_examples: list[str] = field(default_factory=list)
    restart_events_added: int | None = None
    operator_rss_after_restart_mib: float | None = None
    run_order: int | None = None  # where it ran among its part's sides, counted over the sizes
    load_average: list[float] | None = None  # 1, 5 and 15 min, as it began


@dataclass(frozen=True)
class Floor:
    """The cluster with no operator: the same children alone (`objects`), or the writes any
    operator makes (`writes`), timed until every Deployment is available."""

    applier: str | None = None
    objects: int | None = None
    writes: int | None = None
    seconds_to_apply: float | None = None
    deployments_available: int | None = None
    seconds_to_all_available: float | None = None  # None: not all within the deadline
    control_plane_cpu_seconds: dict[str, float] | None = None
    run_order: int | None = None  # as OperatorRun's
    load_average: list[float] | None = None


NO_FLOOR = Floor()


@dataclass(frozen=True)
class OperatorPart:
    """Each size's run and its two floors, by the number of servings (a string, as in JSON:
    "100", "1000"). In JSON the floors are keys "floor_N" and "floor_writes_N"."""

    notes: list[str] = field(default_factory=list)
    sizes: dict[str, OperatorRun | Failed] = field(default_factory=dict)
    floors: dict[str, Floor | Failed] = field(default_factory=dict)
    writes_floors: dict[str, Floor | Failed] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> OperatorPart:
        def read(prefix: str, tp: Any) -> dict[str, Any]:
            return {
                key.removeprefix(prefix): _convert(tp, value, key)
                for key, value in data.items()
                if key.removeprefix(prefix).isdigit() and key.startswith(prefix)
            }

        return cls(
            notes=list(data.get("notes", [])),
            sizes=read("", OperatorRun | Failed),
            floors=read("floor_", Floor | Failed),
            writes_floors=read("floor_writes_", Floor | Failed),
        )


# ------------------------------------------------------------------ the profile


@dataclass(frozen=True)
class ProfilePart:
    """py-spy over the sidecar at saturation: shares of the samples, in %."""

    notes: list[str] = field(default_factory=list)
    samples: int | None = None
    own_time_by_package: list[tuple[str, float]] = field(default_factory=list)
    top_own: list[tuple[str, float]] | None = None  # None: the profile did not run
    top_inclusive: list[tuple[str, float]] = field(default_factory=list)


# ------------------------------------------------------------------ the activator


@dataclass(frozen=True)
class ActivatorPart:
    """make bench-activator's figures as it wrote them (bench/comparisons/compare_activator
    reads and prints them); `notes` alone when it was skipped or failed."""

    figures: dict[str, Any]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ActivatorPart:
        return cls(figures=dict(data))


# ------------------------------------------------------------------ the whole


@dataclass(frozen=True)
class Parts:
    """The parts that ran, each under its key in results.json."""

    request_path: PathPart | None = None
    grpc: PathPart | Skipped | None = None
    outage: OutagePart | Skipped | None = None
    crash: CrashPart | Skipped | None = None
    inference_log: LogPart | Skipped | None = None
    operator: OperatorPart | None = None
    profile: ProfilePart | None = None
    activator: ActivatorPart | None = None


@dataclass(frozen=True)
class Results:
    date: str
    machine: Machine
    versions: dict[str, str]
    parts: Parts
    commit: str | None = None
    seconds: int | None = None


def from_json(cls: type[T], data: dict[str, Any]) -> T:
    """A dataclass from its JSON object; a missing field without a default is an error."""
    reader = getattr(cls, "from_json", None)
    if reader is not None:
        return reader(data)
    hints = get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            value = data[f.name]
            if value is None and "null" in f.metadata:
                values[f.name] = f.metadata["null"]
            else:
                values[f.name] = _convert(hints[f.name], value, f"{cls.__name__}.{f.name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ValueError(f"{cls.__name__} without {f.name!r}: {sorted(data)}")
    return cls(**values)


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin, args = get_origin(tp), get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        return _convert(_member(tp, value, where), value, where)
    if origin is list:
        return [_convert(args[0], v, where) for v in value]
    if origin is tuple:
        return tuple(_convert(a, v, where) for a, v in zip(args, value, strict=True))
    if origin is dict:
        return {k: _convert(args[1], v, f"{where}[{k}]") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ValueError(f"{where}: {value!r} is not an object")
        return from_json(tp, value)
    return value  # a number, string or bool as JSON has it (an int stays an int)


def _member(union: Any, value: Any, where: str) -> Any:
    """Which type of a union an object is: among those whose required fields it has, the one
    that names most of its keys (a {"error": ...} object is the failed one)."""
    members = [a for a in get_args(union) if a is not type(None)]
    if len(members) == 1:
        return members[0]
    fitting = []
    for member in members:
        names = {f.name for f in dataclasses.fields(member)}
        required = {
            f.name
            for f in dataclasses.fields(member)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        }
        if required <= value.keys():
            fitting.append((len(names & value.keys()), member))
    if not fitting:
        raise ValueError(f"{where}: {sorted(value)} is none of {[m.__name__ for m in members]}")
    return max(fitting, key=lambda pair: pair[0])[1]


def load(path: Path) -> Results:
    return from_json(Results, json.loads(path.read_text()))
