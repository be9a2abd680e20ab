"""Section 4 of the report, the operator at scale: its time to all Ready beside the cluster
alone and the cluster with the writes any operator makes, its memory, a restart's writes, and
what each run cost the control plane."""

from __future__ import annotations

import math

from bench.report.cells import fmt, notes_lines
from bench.report.results import NO_FLOOR, Failed, Floor, OperatorPart, OperatorRun


def operator_lines(part: OperatorPart) -> list[str]:
    lines = notes_lines(part.notes)
    sizes = list(part.sizes)
    if not sizes:
        return lines
    lines += [
        "",
        "| servings | all Ready after (s) | the cluster alone, same objects: all available "
        "after (s) | ratio | Ready at the end | Deployments available "
        "| operator RSS peak / settled / at a restart, peak / after (MiB) "
        "| restart: all reconciled after (s) | restart: objects written "
        "| restart: Events added |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for n in sizes:
        r, floor = part.sizes[n], part.floors.get(n, NO_FLOOR)
        if isinstance(r, Failed):
            lines.append(f"| {n} | failed: {r.error[-200:]} |")
            continue
        lines.append(
            f"| {int(n):,} | {_ready_after(r)} | {_floor_after(floor)} "
            f"| {fmt(floor_ratio(r, floor))} | {r.ready} "
            f"| {_or_dash(r.deployments_available)} "
            f"| {r.operator_rss_peak_mib} / {r.operator_rss_settled_mib} "
            f"/ {_or_dash(r.operator_rss_restart_peak_mib)} "
            f"/ {r.operator_rss_after_restart_mib} "
            f"| {_restart_after(r)} "
            f"| {r.restart_objects_written} | {r.restart_events_added} |"
        )
    # The floors' appliers, unless the writes floor's applier is the same one.
    appliers = {f.applier for f in part.floors.values() if isinstance(f, Floor) and f.applier}
    appliers -= {f.applier for f in part.writes_floors.values() if isinstance(f, Floor)}
    applier = f" ({', '.join(sorted(appliers))})" if appliers else ""
    lines += _least_writes_lines(part, sizes)
    lines += _control_plane_lines(part, sizes)
    lines += [
        "",
        "The cluster alone: the same children (every object the operator renders for a "
        "serving, rendered by its code: Deployment, Service, ConfigMaps, NetworkPolicy, the "
        f"sidecar's ServiceAccount and RoleBinding) created by the benchmark's applier{applier}, "
        "as the servings of the operator's side are, with no operator running, timed until every "
        "Deployment has its Pod available. No operator can be faster than that on the same "
        "machine; the ratio is the operator's time over it, measured in the same run.",
    ]
    return lines


def _least_writes_lines(part: OperatorPart, sizes: list[str]) -> list[str]:
    """The second floor: the cluster with the writes any operator makes."""
    measured = [
        n for n in sizes if n in part.writes_floors and not isinstance(part.sizes[n], Failed)
    ]
    if not measured:
        return []
    lines = [
        "",
        "| servings | all Ready after (s) | the cluster with the servings and the writes any "
        "operator makes: all available after (s) | writes there, per serving | ratio "
        "| the operator's API writes per serving (+ its Events) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for n in measured:
        r, floor = part.sizes[n], part.writes_floors[n]
        assert isinstance(r, OperatorRun)  # failed sizes are not measured
        writes = floor.writes if isinstance(floor, Floor) else None
        per_serving = writes / int(n) if writes is not None else None
        ours = r.operator.api_writes_per_serving if r.operator else None
        lines.append(
            f"| {int(n):,} | {_ready_after(r)} | {_floor_after(floor)} | {fmt(per_serving)} "
            f"| {fmt(floor_ratio(r, floor))} | {fmt(ours)} + {_or_dash(r.events_per_serving)} "
            "|"
        )
    first = part.writes_floors[measured[0]]
    applier = (first.applier or "") if isinstance(first, Floor) else ""
    return [
        *lines,
        "",
        "The writes any operator makes, with no operator running: each serving created (the "
        "user's request, as on the operator's side), its children as the operator renders them "
        "(owned by it: the garbage collector's work counts), and one status write, by the "
        f"benchmark's applier ({applier}); timed until every Deployment has its Pod available. "
        "The ratio is what the operator costs beyond what it must write, measured in the same "
        "run. The Events counted are the operator's, those of the ModelServings, per serving "
        "(runs before this note counted every Event of the namespace, the cluster's own on "
        "Deployments, ReplicaSets and Pods included: about 3 a serving more).",
    ]


def _control_plane_lines(part: OperatorPart, sizes: list[str]) -> list[str]:
    """The control plane's CPU seconds in each run of a size: what it cost the cluster."""

    def total(run: OperatorRun | Floor | Failed | None) -> float | None:
        if run is None or isinstance(run, Failed) or not run.control_plane_cpu_seconds:
            return None
        value = run.control_plane_cpu_seconds.get("total")
        return float(value) if value is not None else None

    measured = [n for n in sizes if total(part.sizes[n]) is not None]
    if not measured:
        return []  # a run from before the figure
    lines = [
        "",
        "| servings | the operator's own CPU (s) | control plane CPU (s): with the operator "
        "| the cluster alone | ratio | the cluster with the writes any operator makes | ratio "
        "| run order (load average, 1 min, as each began) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for n in measured:
        run = part.sizes[n]
        own = run.operator_cpu_seconds if isinstance(run, OperatorRun) else None
        ours = total(run)
        alone = total(part.floors.get(n))
        writes = total(part.writes_floors.get(n))
        lines.append(
            f"| {int(n):,} | {fmt(own, 1)} | {fmt(ours, 1)} | {fmt(alone, 1)} "
            f"| {fmt(_ratio(ours, alone))} | {fmt(writes, 1)} | {fmt(_ratio(ours, writes))} "
            f"| {_order(part, n)} |"
        )
    return [
        *lines,
        "",
        "The CPU seconds the cluster's own processes (kube-apiserver, etcd, the controller "
        "manager, the scheduler, KWOK) used in each run, from the first request until all were "
        "Ready or available; the operator's own CPU (from /proc, over the same time) is beside "
        "it, not in it. On this machine the control plane is what every side waits on, so these "
        "ratios say what the operator costs the cluster, with far less of the machine's noise "
        "than the times. The cluster slows from run to run in one environment: the order the "
        "sides ran in, and the machine's load as each began, say how far to trust a ratio.",
    ]


def _order(part: OperatorPart, n: str) -> str:
    """The sides of size n in the order they ran, each with the load average as it began."""
    sides = [
        ("operator", part.sizes.get(n)),
        ("alone", part.floors.get(n)),
        ("writes", part.writes_floors.get(n)),
    ]
    ran = [
        (run.run_order, name, run.load_average)
        for name, run in sides
        if run is not None and run.run_order is not None
    ]
    if not ran:
        return "-"  # a run from before the figure
    return ", ".join(f"{name} ({load[0]:.1f})" if load else name for _, name, load in sorted(ran))


def _ratio(ours: float | None, floor: float | None) -> float | None:
    return round(ours / floor, 2) if ours and floor else None


def _or_dash(value: object) -> object:
    return "-" if value is None else value


def _restart_after(r: OperatorRun) -> str:
    seconds = r.restart_seconds_to_reconcile_all
    if seconds is None:
        return "-"  # a run from before the figure
    return "not all" if seconds == math.inf else f"{seconds}"


def floor_ratio(operator: OperatorRun, floor: Floor | Failed) -> float | None:
    """The operator's time to all Ready over the cluster's own time for the same objects."""
    if isinstance(floor, Failed):
        return None
    return _ratio(operator.seconds_to_all_ready, floor.seconds_to_all_available)


def _floor_after(floor: Floor | Failed) -> str:
    if isinstance(floor, Failed):
        return f"failed: {floor.error[-120:]}"
    return fmt(floor.seconds_to_all_available, 1)


def _ready_after(r: OperatorRun) -> str:
    if r.seconds_to_all_ready is not None:
        return fmt(r.seconds_to_all_ready, 1)
    return f"not all within {r.ready_timeout_seconds or 0:.0f}"
