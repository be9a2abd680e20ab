"""The benchmark's arithmetic and report: wrk and vegeta parsing, percentiles, added latency,
per-core rates, py-spy stacks, the Markdown and SVG it writes, the sidecar comparison's table
(no tool runs here); and the tree of another revision that the comparisons measure."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import REPO
from tests.support.scripts import load_bench

stats = load_bench("harness.stats")
results_ = load_bench("report.results")
page = load_bench("report.page")
plot = load_bench("report.plot")
targets = load_bench("report.targets")
failures = load_bench("report.failures")
operator = load_bench("report.operator")
path_report = load_bench("report.request_path")
grpc_report = load_bench("report.grpc")
procs = load_bench("harness.procs")
compare_sidecar = load_bench("comparisons.compare_sidecar")

WRK_OUTPUT = """Running 5s test @ http://127.0.0.1:8080/v1/models/bench:predict
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     4.52ms    1.10ms  20.00ms   90.00%
    Req/Sec    14.10k     1.00k   15.00k    70.00%
  70196 requests in 5.01s, 12.34MB read
  Non-2xx or 3xx responses: 12
  Socket errors: connect 0, read 1, write 0, timeout 2
Requests/sec:  14022.15
Transfer/sec:      2.46MB
"""

VEGETA_REPORT = {
    "latencies": {"50th": 500_000, "90th": 900_000, "99th": 2_500_000, "max": 9_000_000},
    "rate": 1000.01,
    "requests": 5000,
    "success": 0.999,
    "status_codes": {"200": 4995, "0": 5},
}


def test_wrk_summary_is_read_with_its_errors():
    result = stats.parse_wrk(WRK_OUTPUT)
    assert result.rps == 14022.15
    assert result.requests == 70196
    assert result.non_2xx == 12
    assert result.socket_errors == 3


def test_wrk_output_without_a_summary_is_refused():
    with pytest.raises(ValueError, match="not a wrk summary"):
        stats.parse_wrk("unable to connect to 127.0.0.1:1 Connection refused")


def test_vegeta_latencies_are_milliseconds_and_unanswered_requests_are_not_answers():
    result = stats.parse_vegeta(VEGETA_REPORT)
    assert (result.p50_ms, result.p90_ms, result.p99_ms, result.max_ms) == (0.5, 0.9, 2.5, 9.0)
    assert result.answered == 4995


def test_added_latency_is_the_difference_per_percentile():
    direct = stats.parse_vegeta(VEGETA_REPORT)
    proxied = stats.LatencyResult(1000, 5000, 5000, 1.0, 0.75, 1.2, 3.5, 10.0)
    assert stats.added_latency(proxied, direct) == {"p50": 0.25, "p90": 0.3, "p99": 1.0}


@pytest.mark.parametrize(("pct", "expected"), [(0, 1.0), (50, 2.5), (90, 3.7), (100, 4.0)])
def test_percentile_interpolates_between_closest_ranks(pct, expected):
    assert stats.percentile([4.0, 1.0, 3.0, 2.0], pct) == pytest.approx(expected)


def test_percentile_of_nothing_is_an_error():
    with pytest.raises(ValueError):
        stats.percentile([], 50)


def test_rps_per_core_credits_only_the_core_time_used():
    assert stats.rps_per_core(5000, cpu_seconds=2.5, wall_seconds=5.0) == 10_000
    assert stats.rps_per_core(5000, cpu_seconds=0, wall_seconds=5.0) is None


def test_duplicates_are_not_negative_losses():
    assert stats.records_lost(answered=25_000, delivered=25_003) == 0
    assert stats.records_lost(answered=25_000, delivered=5_000) == 20_000


def test_proc_stat_cpu_reads_utime_and_stime_past_a_command_with_spaces():
    line = "42 (my proc) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 100 0 0"
    assert stats.parse_proc_stat_cpu(line, 100) == 3.0


def test_rss_comes_from_vmrss_and_its_peak_from_vmhwm():
    status = "Name:\tx\nVmHWM:\t  4096 kB\nVmRSS:\t  2048 kB\n"
    assert stats.parse_status_kib(status) == 2048
    assert stats.parse_status_kib(status, "VmHWM") == 4096
    assert stats.parse_status_kib("Name:\tkworker\n") == 0


def test_py_spy_stacks_rank_own_and_inclusive_time():
    collapsed = (
        'process 1:"python";thread (0x1);run (a.py:1);handle (b.py:2);encode (c.py:3) 30\n'
        'process 1:"python";thread (0x1);run (a.py:1);handle (b.py:2) 50\n'
        'process 1:"python";thread (0x1);run (a.py:1) 20\n'
    )
    own, inclusive, total = stats.top_frames(collapsed)
    assert total == 100
    assert own[0] == ("handle (b.py:2)", 50.0)
    assert inclusive[0] == ("run (a.py:1)", 100.0)
    assert ("encode (c.py:3)", 30.0) in own


def _latency(rate: str, p50: float, p90: float, p99: float) -> dict:
    """One fixed-rate run as results.json holds it (stats.LatencyResult)."""
    n = 5 * int(rate)
    return {
        "rate": float(rate),
        "requests": n,
        "answered": n,
        "success": 1.0,
        "p50_ms": p50,
        "p90_ms": p90,
        "p99_ms": p99,
        "max_ms": 2 * p99,
    }


def _measured(**figures) -> dict:
    """One pass of one configuration as results.json holds it; `figures` override."""
    return {
        "saturation": {"rps": 9000.0, "requests": 45000},
        "cpu_share": 1.0,
        "rps_per_core": 9000,
        "rss_peak_mib": 40.0,
        "latency": {},
        **figures,
    }


def _read(results: dict):
    """The report's typed results of a results.json (the header filled in when left out)."""
    header = {"date": "d", "machine": _results()["machine"], "versions": {}}
    return results_.from_json(results_.Results, {**header, **results})


def _results():
    run = _measured(
        cpu_share=0.98,
        rps_per_core=9184,
        latency={rate: _latency(rate, 0.5, 0.8, 1.5) for rate in ("200", "1000")},
        added_ms={rate: {"p50": 0.2, "p90": 0.3, "p99": 0.9} for rate in ("200", "1000")},
    )
    return {
        "date": "2026-11-25 10:00 UTC",
        "commit": "abc1234",
        "seconds": 600,
        "machine": {"cpu": "x", "cores": 2, "memory_gib": 24, "kernel": "6", "pinning": "p"},
        "versions": {"nginx": "1.22.1"},
        "parts": {
            "request_path": {
                "configurations": ["direct", "sidecar, apiKey, log on"],
                "results": {"direct": [run, run], "sidecar, apiKey, log on": [run, {"error": "x"}]},
            }
        },
    }


def test_markdown_shows_both_runs_and_marks_a_failed_one():
    text = page.render_markdown(_read(_results()))
    assert "| sidecar, apiKey, log on | 9,000 / failed |" in text
    assert "0.900 / 0.900" in text  # added p99 at both rates, both runs of direct
    assert plot.SVG_NAME in text


def test_svg_has_one_group_per_configuration_that_ran():
    series = plot.latency_series(_read(_results()).parts.request_path)
    assert [name for name, _ in series] == ["direct", "sidecar, apiKey, log on"]
    svg = plot.render_svg(series, "t")
    assert svg.startswith("<svg") and svg.count("<rect") == 1 + 3 + 3 * len(series)
    assert "0.1 ms" in svg and "10 ms" in svg  # log-scale ticks around 0.5 .. 1.5 ms


def test_own_time_adds_up_per_package():
    own = [
        ("read (aiohttp/streams.py:1)", 10.0),
        ("write (aiohttp/http_writer.py:2)", 5.0),
        ("infer (modelserving/sidecar/app.py:3)", 7.5),
        ("<module> (<string>:1)", 1.0),
    ]
    assert stats.by_package(own) == [("aiohttp", 15.0), ("modelserving", 7.5), ("<string>", 1.0)]


def test_targets_are_judged_on_every_run_of_our_configuration():
    rows = {
        what: (values, verdict)
        for what, _, values, verdict in targets.target_rows(_read(_results()))
    }
    assert rows["requests/s per core (apiKey, log on)"] == (
        [9184],
        "met",
    )  # the failed run is left out
    assert rows["added p99 at 1,000 rps, ms"] == ([0.9], "met")
    assert rows["records lost, broker down 10 s at 1,000 rps"] == ([], "not measured")


def _saturation(rps_per_core: int) -> dict:
    return _measured(rps_per_core=rps_per_core, rss_peak_mib=50.0)


def test_log_cost_and_kserve_ratio_pair_the_passes_of_one_run():
    results = {
        "parts": {
            "request_path": {
                "configurations": [],  # not drawn here
                "results": {
                    # 1e6/8000 - 1e6/10000 = 25 µs; 1e6/9000 - 1e6/10000 = 11.1 µs
                    "sidecar, apiKey, log on": [_saturation(8000), _saturation(9000)],
                    "sidecar, apiKey, log off": [_saturation(10000), _saturation(10000)],
                    "KServe agent, logger on": [_saturation(8000), {"error": "x"}],
                },
            }
        }
    }
    rows = {
        what: (values, verdict) for what, _, values, verdict in targets.target_rows(_read(results))
    }
    cost, verdict = rows["the log's own CPU per request (log on minus log off), µs"]
    assert [round(v, 1) for v in cost] == [25.0, 11.1] and verdict == "mixed"
    # the second pass of KServe's agent failed: only the first pass pairs
    assert rows["requests/s per core, log on, over KServe's agent with its logger"] == (
        [1.0],
        "met",
    )


def test_spooled_the_default_is_judged_against_buffered_pass_by_pass():
    def passed(rps_per_core: int, p99: float) -> dict:
        added = {"1000": {"p50": 0.3, "p90": 0.5, "p99": p99}}
        return {**_saturation(rps_per_core), "added_ms": added}

    results = {
        "parts": {
            "request_path": {
                "configurations": [],
                "results": {
                    # The defaults' log (spooled) beside buffered: 0.98x then 0.95x per core.
                    "sidecar, apiKey, log on": [passed(9800, 1.2), passed(9500, 1.6)],
                    "sidecar, apiKey, log on, buffered": [passed(10000, 1.0), passed(10000, 1.0)],
                },
            }
        }
    }
    rows = {
        what: (values, verdict) for what, _, values, verdict in targets.target_rows(_read(results))
    }
    ratios, verdict = rows["requests/s per core, spooled (the default) over buffered"]
    assert [round(v, 2) for v in ratios] == [0.98, 0.95] and verdict == "mixed"
    added, verdict = rows["added p99 at 1,000 rps, spooled (the default) minus buffered, ms"]
    assert [round(v, 2) for v in added] == [0.2, 0.6] and verdict == "mixed"


def test_crash_figures_are_judged_and_shown_for_both_durabilities():
    crash = {
        "buffered": {
            "durability": "buffered",
            "rate_asked": 1000,
            "rate_reached": 998,
            "answered_before_kill": 2990,
            "records_lost": 4,
            "lost_answered_within_ms_of_kill": 6,
            "records_resent": 31,
            "max_in_flight_records": 10000,
        },
        "spooled": {
            "durability": "spooled",
            "rate_asked": 1000,
            "rate_reached": 997,
            "answered_before_kill": 2985,
            "records_lost": 0,
            "lost_answered_within_ms_of_kill": 0,
            "records_resent": 12000,
            "max_in_flight_records": 10000,
        },
    }
    rows = {
        what: (values, verdict)
        for what, _, values, verdict in targets.target_rows(_read({"parts": {"crash": crash}}))
    }
    lost = (
        "answered requests whose record was lost, sidecar SIGKILL at 1,000 rps, spooled "
        "(the default)"
    )
    assert rows[lost] == ([0], "met")
    # 12,000 sent twice is more than could have been in flight: short
    assert rows["records sent twice after that SIGKILL (buffered; spooled)"][1] == "**short**"
    lines = failures.crash_lines(results_.from_json(results_.CrashPart, crash))
    assert "| buffered | 998 | 2,990 | **4** | 6 | **31** | 10,000 |" in lines
    assert "| spooled | 997 | 2,985 | **0** | 0 | **12,000** | 10,000 |" in lines


def test_operator_table_sets_its_time_beside_the_cluster_alone():
    part = {
        "1000": {"seconds_to_all_ready": 90.0, "ready": 1000, "deployments_available": 1000},
        "floor_1000": {"seconds_to_all_available": 80.0, "objects": 5000},
        "100": {"seconds_to_all_ready": None, "ready_timeout_seconds": 120, "ready": 90},
        "floor_100": {"error": "kubectl apply (cluster floor): refused"},
    }
    typed = results_.OperatorPart.from_json(part)
    rows = {line.split(" | ")[0]: line for line in operator.operator_lines(typed) if "|" in line}
    assert "| 90.0 | 80.0 | 1.12 |" in rows["| 1,000"]
    assert "not all within 120 | failed: kubectl apply" in rows["| 100"]
    assert operator.floor_ratio(typed.sizes["100"], typed.floors["100"]) is None


def test_operator_memory_is_judged_while_applying_and_at_and_after_a_restart():
    results = {
        "parts": {
            "operator": {
                "1000": {
                    "servings": 1000,
                    "seconds_to_all_ready": 50.0,
                    "operator_rss_peak_mib": 150.0,
                    "operator_rss_restart_peak_mib": 260.0,
                    "operator_rss_after_restart_mib": 140.0,
                }
            }
        }
    }
    rows = {
        what: (values, verdict) for what, _, values, verdict in targets.target_rows(_read(results))
    }
    what = "operator RSS with 1,000 servings (applying; at a restart, peak and after), MiB"
    assert rows[what] == ([150.0, 260.0, 140.0], "mixed")


def test_the_restart_row_says_how_long_until_every_serving_was_reconciled():
    part = {
        "1000": {"servings": 1000, "restart_seconds_to_reconcile_all": 9.5},
        "100": {"servings": 100, "restart_seconds_to_reconcile_all": None},
    }
    lines = operator.operator_lines(results_.OperatorPart.from_json(part))
    rows = {line.split(" | ")[0]: line for line in lines if "|" in line}
    assert "| 9.5 |" in rows["| 1,000"]
    assert "| not all |" in rows["| 100"]


def _round(rps_per_core: float) -> object:
    return compare_sidecar.Result(
        rps=1000.0,
        requests=4000,
        cpu_share=1.0,
        cpu_us_per_request=100.0,
        rps_per_core=rps_per_core,
        rss_peak_mib=40.0,
    )


def test_sidecar_comparison_gives_medians_as_ratios_to_the_bare_proxy():
    results = {
        compare_sidecar.REFERENCE: [_round(5000), _round(6000), _round(60000)],
        "sidecar @HEAD~1, apiKey, log off": [_round(9000), _round(12000), _round(12000)],
        "sidecar, apiKey, log on": [],  # failed in every round
    }
    table = compare_sidecar.report(results, compare_sidecar.REFERENCE, latency=False)
    rows = {line[:44].strip(): line[44:].split() for line in table.splitlines()[1:]}
    assert rows[compare_sidecar.REFERENCE][2:4] == ["6000", "100.0"]
    assert rows[compare_sidecar.REFERENCE][4] == "1.00"
    assert rows["sidecar @HEAD~1, apiKey, log off"][4] == "2.00"
    assert "sidecar, apiKey, log on" not in rows


def test_sidecar_comparison_adds_grpc_latency_over_the_direct_grpc_call():
    def timed(p50: float, p99: float) -> object:
        return compare_sidecar.Result(
            rps=1000.0,
            requests=4000,
            cpu_share=1.0,
            cpu_us_per_request=100.0,
            rps_per_core=1000.0,
            rss_peak_mib=40.0,
            p50_ms=p50,
            p99_ms=p99,
            cpu_us_at_rate=100.0,
        )

    results = {
        compare_sidecar.DIRECT: [timed(0.2, 1.0)],
        compare_sidecar.REFERENCE: [timed(0.5, 2.0)],
        compare_sidecar.DIRECT_GRPC: [timed(0.3, 0.5)],
        compare_sidecar.GRPC_LOG_OFF: [timed(1.3, 3.5)],
    }
    table = compare_sidecar.report(results, compare_sidecar.REFERENCE, True, compare_sidecar.BASES)
    rows = {line[:52].strip(): line[52:].split() for line in table.splitlines()[1:]}
    assert rows[compare_sidecar.REFERENCE][6:8] == ["+0.300", "+1.000"]
    assert rows[compare_sidecar.DIRECT_GRPC][6:8] == ["+0.000", "+0.000"]
    assert rows[compare_sidecar.GRPC_LOG_OFF][6:8] == ["+1.000", "+3.000"]


def test_a_revision_tree_runs_its_own_sidecar_not_the_working_tree_one(tmp_path):
    code = procs.tree_at("HEAD", tmp_path / "revision")
    imported = subprocess.run(
        [sys.executable, "-c", "import modelserving_sidecar.app as m; print(m.__file__)"],
        cwd=code,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(imported).is_relative_to(code)


def _pass(rps_per_core: int, cpu_us_at_1000: float, added_p99: float) -> dict:
    return _measured(
        rps_per_core=rps_per_core,
        cpu_us_at_rate={"200": 300.0, "1000": cpu_us_at_1000},
        added_ms={"1000": {"p50": 0.1, "p90": 0.2, "p99": added_p99}},
    )


def _path_part(results: dict):
    """A request-path part of these configurations' passes, typed."""
    part = {"configurations": list(results), "results": results}
    return results_.from_json(results_.PathPart, part)


def test_versions_section_sets_the_split_and_the_shadow_beside_one_version_pass_by_pass():
    sidecar = load_bench("parts.sidecar")
    split, shadow = (sidecar.versions_configuration(v) for v in sidecar.ROUTINGS)
    part = {
        "results": {
            # 1e6/10000 = 100 µs saturated; 1e6/8000 = 125; 1e6/5000 = 200
            sidecar.ONE_VERSION: [_pass(10000, 110.0, 0.5), _pass(10000, 120.0, 0.6)],
            split: [_pass(8000, 115.5, 0.55), {"error": "x"}],
            shadow: [_pass(5000, 150.0, 0.9), _pass(8000, 130.0, 0.7)],
        }
    }
    rows = {
        line.split(" | ")[0].lstrip("| "): line
        for line in path_report.versions_lines(_path_part(part["results"]))
    }

    def cells(name: str) -> list[str]:
        return [cell.strip() for cell in rows[name].strip("|").split("|")][1:]

    assert cells(sidecar.ONE_VERSION) == [
        "100.0 / 100.0",
        "",
        "110.0 / 120.0",
        "",
        "0.500 / 0.600",
        "",
    ]
    assert cells(split) == [
        "125.0 / failed",
        "+25.0 / failed",
        "115.5 / failed",
        "+5.5 / failed",
        "0.550 / failed",
        "+0.050 / failed",
    ]
    assert cells(shadow) == [
        "200.0 / 125.0",
        "+100.0 / +25.0",
        "150.0 / 130.0",
        "+40.0 / +10.0",
        "0.900 / 0.700",
        "+0.400 / +0.100",
    ]


def test_versions_section_is_left_out_when_the_variants_did_not_run():
    sidecar = load_bench("parts.sidecar")
    assert path_report.versions_lines(_path_part({sidecar.ONE_VERSION: [_pass(1, 1.0, 1.0)]})) == []
    results = _results()
    assert "Several model versions" not in page.render_markdown(_read(results))
    split = sidecar.versions_configuration(next(iter(sidecar.ROUTINGS)))
    part = results["parts"]["request_path"]
    part["configurations"].append(split)
    part["results"][split] = [_pass(8000, 1.0, 1.0) | part["results"]["direct"][0]]
    assert "### Several model versions" in page.render_markdown(_read(results))


def test_tracing_section_sets_each_sampling_ratio_beside_tracing_off_pass_by_pass():
    sidecar = load_bench("parts.sidecar")
    none, one, every = (sidecar.tracing_configuration(label) for label in sidecar.TRACING_RATIOS)
    results = {
        # 1e6/10000 = 100 µs saturated; 1e6/9900 = 101.0; 1e6/8000 = 125
        sidecar.ONE_VERSION: [_pass(10000, 110.0, 0.5), _pass(9900, 120.0, 0.6)],
        none: [_pass(10000, 110.0, 0.5), _pass(9900, 119.0, 0.6)],
        one: [_pass(9900, 112.0, 0.5), _pass(9900, 121.0, 0.7)],
        every: [_pass(8000, 150.0, 0.9), {"error": "x"}],
    }
    lines = path_report.tracing_lines(_path_part(results))
    rows = {line.split(" | ")[0].lstrip("| "): line for line in lines}

    def cells(name: str) -> list[str]:
        return [cell.strip() for cell in rows[name].strip("|").split("|")][1:]

    assert cells(none)[:3] == ["100.0 / 101.0", "+0.0 / +0.0", "+0"]
    assert cells(one) == [
        "101.0 / 101.0",
        "+1.0 / +0.0",
        "<= +3",
        "112.0 / 121.0",
        "+2.0 / +1.0",
        "0.500 / 0.700",
        "+0.000 / +0.100",
    ]
    assert cells(every)[:4] == ["125.0 / failed", "+25.0 / failed", "measured", "150.0 / failed"]
    assert "tracing off's own passes differ by 1.0 µs/request" in lines[-1]
    assert path_report.tracing_lines(_path_part({sidecar.ONE_VERSION: results[none]})) == []


def test_sidecar_comparison_gives_what_each_sampling_ratio_adds_round_by_round():
    sidecar = load_bench("parts.sidecar")

    def measured(cpu_us: float, at_rate: float, p99: float, round_: int) -> object:
        return compare_sidecar.Result(
            rps=1000.0,
            requests=4000,
            cpu_share=1.0,
            cpu_us_per_request=cpu_us,
            rps_per_core=1e6 / cpu_us,
            rss_peak_mib=40.0,
            p50_ms=0.5,
            p99_ms=p99,
            cpu_us_at_rate=at_rate,
            round=round_,
        )

    off = "sidecar, apiKey, log on"
    results = {
        # Round 2 ran slower for both: the differences, not the figures, are compared; the
        # base failed in round 4, whose 1% figure is then left out.
        off: [measured(100, 200, 1.0, 1), measured(130, 260, 1.5, 2), measured(101, 201, 1.0, 3)],
        sidecar.tracing_configuration("1%"): [
            measured(102, 201, 1.1, 1),
            measured(131, 262, 1.5, 2),
            measured(103, 204, 1.2, 3),
            measured(900, 900, 9.0, 4),
        ],
    }
    (line,) = compare_sidecar.tracing_report(results, off).splitlines()[1:]
    assert (
        line
        == "     1% sampled: CPU   +2.0 µs/req saturated,   +2.0 µs/req at 1000 rps, p99 +0.100 ms"
    )


# ------------------------------------------------------------------ the gRPC path

GHZ_REPORT = {
    "count": 5000,
    "rps": 999.8,
    "slowest": 12_000_000,
    "statusCodeDistribution": {"OK": 4990, "Unavailable": 6, "PermissionDenied": 4},
    "latencyDistribution": [
        {"percentage": p, "latency": ns}
        for p, ns in ((10, 200_000), (50, 600_000), (90, 1_100_000), (99, 3_000_000))
    ],
}


def test_ghz_latencies_are_milliseconds_and_calls_without_an_answer_are_not_answers():
    result = stats.parse_ghz(GHZ_REPORT)
    assert (result.p50_ms, result.p90_ms, result.p99_ms, result.max_ms) == (0.6, 1.1, 3.0, 12.0)
    assert result.rate == 999.8 and result.requests == 5000
    assert result.success == 0.998
    assert result.answered == 4994  # PermissionDenied is an answer; Unavailable from the channel


def test_ghz_report_without_a_percentile_is_refused():
    report_ = {**GHZ_REPORT, "latencyDistribution": GHZ_REPORT["latencyDistribution"][:2]}
    with pytest.raises(ValueError, match="percentile"):
        stats.parse_ghz(report_)


def test_ghz_report_of_no_ok_call_has_no_latency_and_no_success():
    result = stats.parse_ghz(
        {
            "count": 3,
            "rps": 1.0,
            "slowest": 0,
            "latencyDistribution": None,
            "statusCodeDistribution": {"Unauthenticated": 3},
        }
    )
    assert (result.success, result.answered, result.p99_ms) == (0.0, 3, 0.0)


def _upstream_conf_answers() -> tuple[dict, dict]:
    """The REST upstream's fixed predict body and model status, read from its nginx config."""
    import json
    import re

    conf = (REPO / "bench" / "baselines" / "nginx" / "upstream.conf").read_text()
    bodies = [json.loads(b) for b in re.findall(r"return 200 '(.+)';", conf)]
    status = next(b for b in bodies if "model_version_status" in b)
    return next(b for b in bodies if "predictions" in b), status


def test_grpc_request_and_answers_carry_what_the_rest_path_sends_and_gets():
    import json

    from modelserving.tfserving import serving_apis_pb2 as apis
    from modelserving_sidecar.grpc.tensor_json import tensor_value

    grpc_path = load_bench("parts.grpc_path")
    load = load_bench("harness.load")
    request = apis.PredictRequest.FromString(grpc_path.predict_request())
    assert request.model_spec.name == load.MODEL
    assert {name: tensor_value(t) for name, t in request.inputs.items()} == json.loads(
        load.PREDICT_BODY
    )
    predictions, status = _upstream_conf_answers()
    response = apis.PredictResponse.FromString(grpc_path.predict_response())
    assert {name: tensor_value(t) for name, t in response.outputs.items()} == predictions
    statuses = apis.GetModelStatusResponse.FromString(grpc_path.model_status())
    assert [
        (v.version, apis.ModelVersionStatus.State.Name(v.state))
        for v in statuses.model_version_status
    ] == [(int(v["version"]), v["state"]) for v in status["model_version_status"]]


def _grpc_pass(rps_per_core: int, p50: float, p99: float) -> dict:
    return _measured(
        rps_per_core=rps_per_core,
        latency={r: _latency(r, p50, p50, p99) for r in ("200", "1000")},
    )


def test_each_sidecar_adds_over_its_own_protocols_direct_call_pass_by_pass():
    grpc_path = load_bench("parts.grpc_path")
    results = {
        grpc_path.REST_DIRECT: [_grpc_pass(20000, 0.3, 0.9), _grpc_pass(20000, 0.4, 1.0)],
        grpc_path.REST_SIDECAR: [_grpc_pass(7000, 0.5, 1.5), _grpc_pass(7000, 0.6, 1.4)],
        grpc_path.GRPC_DIRECT: [_grpc_pass(30000, 0.2, 0.5), {"error": "x"}],
        grpc_path.GRPC_SIDECAR: [_grpc_pass(3000, 0.7, 2.5), _grpc_pass(3000, 0.7, 2.5)],
    }
    grpc_path.add_over_direct(results)
    rest, grpc = results[grpc_path.REST_SIDECAR], results[grpc_path.GRPC_SIDECAR]
    assert [r["added_ms"]["1000"]["p99"] for r in rest] == [0.6, 0.4]
    assert grpc[0]["added_ms"]["200"] == {"p50": 0.5, "p90": 0.5, "p99": 2.0}
    assert "added_ms" not in grpc[1]  # its direct call failed in that pass
    assert "added_ms" not in results[grpc_path.GRPC_DIRECT][0]


def test_grpc_section_sets_the_grpc_sidecar_beside_rest_and_both_direct_calls():
    grpc_path = load_bench("parts.grpc_path")
    results = {
        grpc_path.REST_DIRECT: [_grpc_pass(20000, 0.3, 0.9), _grpc_pass(20000, 0.4, 1.0)],
        grpc_path.REST_SIDECAR: [_grpc_pass(8000, 0.5, 1.5), _grpc_pass(6000, 0.6, 1.4)],
        grpc_path.GRPC_DIRECT: [_grpc_pass(30000, 0.2, 0.5), _grpc_pass(30000, 0.2, 0.5)],
        grpc_path.GRPC_BARE: [_grpc_pass(5000, 0.4, 1.0), _grpc_pass(5000, 0.4, 1.5)],
        grpc_path.GRPC_SIDECAR: [_grpc_pass(4000, 0.7, 2.5), {"error": "ghz got 50% OK"}],
    }
    results[grpc_path.GRPC_SIDECAR][0]["records"] = {"on_topic": 31000, "calls_answered": 31000}
    grpc_path.add_over_direct(results)
    part = {"configurations": list(results), "results": results}
    rows = {
        line.split(" | ")[0].lstrip("| "): line
        for line in grpc_report.grpc_lines(_path_part(results))
    }

    def cells(name: str) -> list[str]:
        return [cell.strip() for cell in rows[name].strip("|").split("|")][1:]

    assert cells(grpc_path.REST_DIRECT) == [
        "REST",
        "20,000 / 20,000",
        "1,000 / 1,000",
        "0.300 / 0.900 ; 0.400 / 1.000",
        "",
        "",
        "",
    ]
    assert cells(grpc_path.REST_SIDECAR) == [
        "REST",
        "8,000 / 6,000",
        "1,000 / 1,000",
        "0.500 / 1.500 ; 0.600 / 1.400",
        "0.200 / 0.600 ; 0.200 / 0.400",
        "0.200 / 0.600 ; 0.200 / 0.400",
        "",
    ]
    assert cells(grpc_path.GRPC_BARE) == [
        "gRPC",
        "5,000 / 5,000",
        "1,000 / 1,000",
        "0.400 / 1.000 ; 0.400 / 1.500",
        "0.200 / 0.500 ; 0.200 / 1.000",
        "0.200 / 0.500 ; 0.200 / 1.000",
        "",
    ]
    order = [name for name in rows if name in results]
    assert order == [
        grpc_path.REST_DIRECT,
        grpc_path.REST_SIDECAR,
        grpc_path.GRPC_DIRECT,
        grpc_path.GRPC_BARE,
        grpc_path.GRPC_SIDECAR,
    ]
    assert cells(grpc_path.GRPC_SIDECAR) == [
        "gRPC",
        "4,000 / failed",
        "1,000 / failed",
        "0.700 / 2.500 ; failed",
        "0.500 / 2.000 ; failed",
        "0.500 / 2.000 ; failed",
        "31,000 / 31,000 ; failed",
    ]
    assert "over the sidecar over REST: 0.50 (pass by pass)" in "\n".join(
        grpc_report.grpc_lines(_path_part(results))
    )
    results_doc = _results()
    results_doc["parts"]["grpc"] = part
    text = page.render_markdown(_read(results_doc))
    assert "## gRPC" in text and "| sidecar over gRPC, apiKey, log on | gRPC |" in text


def test_grpc_section_says_why_it_was_skipped():
    results_doc = _results()
    results_doc["parts"]["grpc"] = {"notes": ["skipped: ghz or the gRPC upstream was not built"]}
    assert "## gRPC\n\n- skipped: ghz" in page.render_markdown(_read(results_doc))


def test_the_operator_is_also_compared_with_the_writes_any_operator_makes():
    part = {
        "1000": {
            "servings": 1000,
            "seconds_to_all_ready": 90.0,
            "operator": {"api_writes_per_serving": 10.01},
            "events_per_serving": 4.0,
        },
        "floor_1000": {"seconds_to_all_available": 60.0, "applier": "one POST per object"},
        "floor_writes_1000": {
            "writes": 9000,
            "seconds_to_all_available": 75.0,
            "applier": "one request per write",
        },
    }
    lines = operator.operator_lines(results_.OperatorPart.from_json(part))
    rows = [line for line in lines if line.startswith("| 1,000")]
    assert "| 1.50 |" in rows[0]  # over the cluster alone
    assert rows[1] == "| 1,000 | 90.0 | 75.0 | 9.00 | 1.20 | 10.01 + 4.0 |"
    # Each floor's text names its own applier
    assert any("applier (one POST per object)" in line for line in lines)
    assert any("(one request per write)" in line for line in lines)


def test_the_operator_is_compared_by_the_control_plane_cpu_each_run_cost():
    part = {
        "1000": {
            "seconds_to_all_ready": 90.0,
            "operator_cpu_seconds": 40.0,
            "control_plane_cpu_seconds": {"total": 150.0},
            "run_order": 2,
            "load_average": [1.5, 1.2, 1.0],
        },
        "floor_1000": {
            "seconds_to_all_available": 60.0,
            "control_plane_cpu_seconds": {"kube-apiserver": 80.0, "total": 100.0},
            "run_order": 1,
            "load_average": [0.5, 0.7, 0.9],
        },
        "floor_writes_1000": {
            "seconds_to_all_available": 75.0,
            "control_plane_cpu_seconds": {"total": 125.0},
            "run_order": 3,
            "load_average": [2.0, 1.5, 1.1],
        },
        "100": {"seconds_to_all_ready": 9.0},  # a run from before the figures
    }
    rows = [
        line
        for line in operator.operator_lines(results_.OperatorPart.from_json(part))
        if line.startswith("| 1,000 | 40.0")
    ]
    # The operator's own CPU beside the control plane's, and the order the sides ran in with
    # the load as each began
    assert rows == [
        "| 1,000 | 40.0 | 150.0 | 100.0 | 1.50 | 125.0 | 1.20 "
        "| alone (0.5), operator (1.5), writes (2.0) |"
    ]


def test_a_failed_side_keeps_its_place_in_the_order():
    part = {"1000": {"error": "timed out", "run_order": 1, "load_average": [1.0, 1.0, 1.0]}}
    run = results_.OperatorPart.from_json(part).sizes["1000"]
    assert isinstance(run, results_.Failed) and run.run_order == 1


def test_control_plane_cpu_is_read_from_the_clusters_pid_files(tmp_path):
    pids = tmp_path / "pids"
    pids.mkdir()
    (pids / "etcd.pid").write_text(str(os.getpid()))
    (pids / "kube-apiserver.pid").write_text("999999999")  # gone: not counted
    with procs.ControlPlaneCpu(str(tmp_path)) as used:
        deadline = time.process_time() + 0.3
        while time.process_time() < deadline:
            pass
    assert set(used.seconds) == {"etcd", "total"}
    assert used.seconds["etcd"] >= 0.2
    assert used.seconds["total"] == used.seconds["etcd"]
