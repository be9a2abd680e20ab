"""The inference log pipeline before and after a change, side by side in one run: records/s into
the real broker and CPU per record of the whole process (event loop and threads), for the working
tree and, with --baseline REV, for the pipeline as it was at a git revision.

    python -m bench.comparisons.compare_log [--records 30000] [--rates 0,3000] [--rounds 2]
        [--baseline REV] [--durabilities buffered,spooled] [--framings plain,registry]

Each measurement is a child process pinned to core 1 that opens the real pipeline (spool on
local disk, mode ALL, default settings) on a topic of its own, submits ~1 KB exchanges (the
benchmark's) at a rate (0: as fast as the sink accepts, as `bench.parts.log_throughput` does) and
stops the clock when Kafka has acked them all; under `spooled` (the default, or as
--durabilities says) each exchange is handed over as the request path does it, `spooled()`
awaited for its answer, else with `submit()`. CPU is utime+stime of the process over that
span (getrusage), so thread hand-offs, encoding, the spool and aiokafka all count; the
submitting loop's own cost is in it too, alike for every version. Rates are interleaved over
--rounds and medians reported. Needs the local environment's broker (.localenv/env.json).

`--framings plain,fixed,registry` measures the working tree's records as plain Avro, framed in
Confluent's wire format with an id given (confluentSchemaId), and framed with the id its schema
registry gives (logging.schemaRegistry: the sidecar looks the id up, then frames every record),
side by side: the registry is the stand-in of tests/support, the schema registered in it
before the clock starts. Each round measures the versions in the order of the round before,
reversed (A B, then B A): a measurement later in a round runs slower on this machine (about
0.8 µs per record per place), and the medians would take that for the versions' cost.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import importlib.util
import json
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from bench import REPO
from bench.harness.environment import localenv_settings
from bench.harness.procs import PROXY_CORE, run_pinned, tree_at
from bench.harness.topics import create_topic, delete_created_topics

CORE = PROXY_CORE  # the process measured; the broker and the rest share the other core


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def child(args: argparse.Namespace) -> dict:
    """One measurement, in the child process: the pipeline of the `modelserving` it imports
    (the working tree's, or a revision's when started in that revision's tree)."""
    from prometheus_client import CollectorRegistry

    from bench.parts.payloads import REQUEST, RESPONSE

    if importlib.util.find_spec("modelserving.sidecar") is None:
        from modelserving_sidecar.config import parse_config
        from modelserving_sidecar.log.exchange import Exchange
        from modelserving_sidecar.log.pipeline import open_inference_log
    else:  # a revision from before the source roots (procs.tree_at)
        parse_config = importlib.import_module("modelserving.sidecar.config").parse_config
        Exchange = importlib.import_module("modelserving.sidecar.exchange").Exchange
        open_inference_log = importlib.import_module(
            "modelserving.sidecar.inference_log"
        ).open_inference_log

    config = parse_config(
        {
            "serving": {"name": "bench", "namespace": "bench"},
            "model": {"name": "bench", "version": 1, "modelId": 1},
            "logging": {
                "mode": "ALL",
                "topic": args.topic,
                "bootstrapServers": args.bootstrap,
                "spoolDir": args.spool,
                **({"durability": args.durability} if args.durability else {}),
                **(
                    {"schemaRegistry": {"url": args.registry, "subject": f"{args.topic}-value"}}
                    if args.registry.startswith("http")
                    else ({"confluentSchemaId": 1} if args.registry == "fixed" else {})
                ),
            },
        }
    )
    durable = str(getattr(config.logging, "durability", "buffered")) == "spooled"
    n = args.records
    now = time.time_ns() // 1_000_000
    exchanges = [
        Exchange(f"{i:032x}", now, 200, REQUEST, RESPONSE, 1, "bench", None) for i in range(n)
    ]
    registry = CollectorRegistry()

    def produced() -> float:
        return registry.get_sample_value("modelserving_inference_log_records_produced_total") or 0

    async with open_inference_log(config, registry) as sink:
        answers: list[asyncio.Future[bool]] = []  # spooled: each exchange's wait, as a request's

        def submit(exchange: Exchange) -> None:
            if durable:
                answers.append(asyncio.ensure_future(sink.spooled(exchange)))
            else:
                sink.submit(exchange)

        # Warm-up: a producer connected and its metadata fetched before the clock starts.
        warm = 200
        for ex in exchanges[:warm]:
            submit(ex)
        while produced() < warm:  # noqa: ASYNC110 - a counter, no event
            await asyncio.sleep(0.01)
        todo = exchanges[warm:]
        cpu0, t0 = cpu_seconds(), time.perf_counter()
        if args.rate:
            # Ticks of 1 ms, as requests arrive: what is due by now is submitted.
            i = 0
            while i < len(todo):
                due = min(len(todo), int((time.perf_counter() - t0) * args.rate) + 1)
                while i < due:
                    submit(todo[i])
                    i += 1
                await asyncio.sleep(0.001)
        else:
            for i, ex in enumerate(todo):
                while not sink.accepting():  # noqa: ASYNC110 - no event to wait on
                    await asyncio.sleep(0.0005)
                submit(ex)
                if durable and i % 100 == 99:
                    # A revision whose spooled() is a coroutine queues only once its task runs:
                    # let them run, or accepting() cannot see the queue fill.
                    await asyncio.sleep(0)
        kept = sum(await asyncio.gather(*answers))
        if durable and kept != n:
            raise SystemExit(f"{n - kept} of {n} exchanges were answered without their record")
        submitted = time.perf_counter() - t0
        while produced() < n:  # noqa: ASYNC110 - a counter, no event
            await asyncio.sleep(0.002)
        elapsed = time.perf_counter() - t0
        cpu = cpu_seconds() - cpu0
    measured = n - warm
    return {
        "records_per_s": measured / elapsed,
        "cpu_us_per_record": cpu / measured * 1e6,
        "cpu_share": cpu / elapsed,
        "submit_s": submitted,
        "acked_s": elapsed,
    }


@contextlib.contextmanager
def registry_standin(log: Path) -> Iterator[str]:
    """The schema registry's stand-in (tests/support) as a process of its own; its URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    standin = REPO / "tests" / "support" / "schema_registry_standin.py"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, str(standin), "--port", str(port)], stdout=out, stderr=out
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    said = log.read_text()
                    raise SystemExit(f"the registry stand-in did not start: {said}") from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def register(registry: str, topic: str) -> None:
    """The schema under the topic's subject, as the operator registers it."""
    from modelserving.inferencelog.record import SCHEMA
    from modelserving.inferencelog.schema_registry import SchemaRegistry
    from modelserving_operator.kafka.schema_registry import register_schema

    registered = asyncio.run(register_schema(SchemaRegistry(registry), f"{topic}-value", SCHEMA))
    if not hasattr(registered, "schema_id"):
        raise SystemExit(f"the schema could not be registered: {registered}")


def revision_tree(rev: str, into: Path) -> Path:
    """The package at `rev`, with the working tree's bench beside it: the child started there
    imports that revision's `modelserving` and this benchmark."""
    code = tree_at(rev, into)
    (code / "bench").symlink_to(REPO / "bench", target_is_directory=True)
    return code


def run_child(
    code: Path | None,
    bootstrap: str,
    topic: str,
    spool: Path,
    n: int,
    rate: int,
    durability: str,
    registry: str = "",
):
    """The child pinned to CORE, started in the working tree or in a revision's tree (where
    Python finds that revision's `modelserving` first)."""
    cmd = [
        sys.executable,
        "-m",
        "bench.comparisons.compare_log",
        "--child",
        "--topic",
        topic,
        "--bootstrap",
        bootstrap,
        "--spool",
        str(spool),
        "--records",
        str(n),
        "--rate",
        str(rate),
        *(["--durability", durability] if durability else []),
        *(["--registry", registry] if registry else []),
    ]
    out = run_pinned(cmd, CORE, timeout=600, cwd=code or REPO)
    return json.loads(out.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.comparisons.compare_log", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--records", type=int, default=30_000, help="records per measurement")
    parser.add_argument("--rates", default="0,3000", help="submit rates, 0: flat out")
    parser.add_argument("--rounds", type=int, default=2, help="passes over all rates and versions")
    parser.add_argument(
        "--durabilities",
        default="",
        help="logging.durability of each measurement, e.g. buffered,spooled (default: the "
        "version's default)",
    )
    parser.add_argument(
        "--framings",
        default="plain",
        help="the values' framing in each measurement of the working tree: plain (Avro, the "
        "default), fixed (Confluent's wire format with an id given, confluentSchemaId) and/or "
        "registry (the same with the id a schema registry gives)",
    )
    parser.add_argument(
        "--baseline", metavar="REV", help="git revision whose pipeline is measured alongside"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap", help=argparse.SUPPRESS)
    parser.add_argument("--spool", help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--durability", default="", help=argparse.SUPPRESS)
    parser.add_argument("--registry", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(asyncio.run(child(args))))
        return 0
    env = localenv_settings()
    if env is None:
        raise SystemExit("the local environment's broker is needed: make env-up")
    bootstrap = env["kafka_bootstrap"]
    rates = [int(r) for r in args.rates.split(",")]
    durabilities = [d.strip() for d in args.durabilities.split(",") if d.strip()] or [""]
    framings = [f.strip() for f in args.framings.split(",") if f.strip()]
    if set(framings) - {"plain", "fixed", "registry"}:
        raise SystemExit(f"--framings: plain, fixed and/or registry, not {args.framings!r}")
    with tempfile.TemporaryDirectory(prefix="compare-log-") as tmp, contextlib.ExitStack() as stack:
        registry = (
            stack.enter_context(registry_standin(Path(tmp) / "registry.log"))
            if "registry" in framings
            else ""
        )
        versions: list[tuple[Path | None, str, str]] = [
            {
                "plain": (None, "working tree", ""),
                "fixed": (None, "working tree, id given", "fixed"),
                "registry": (None, "working tree, registry", registry),
            }[framing]
            for framing in framings
        ]
        if args.baseline:
            code = revision_tree(args.baseline, Path(tmp) / "baseline")
            versions.insert(0, (code, f"@{args.baseline}", ""))
        results: dict[tuple[str, int], list[dict]] = {}
        try:
            for round_ in range(args.rounds):
                for rate in rates:
                    ordered = versions if round_ % 2 == 0 else versions[::-1]
                    for code, version, registry in ordered:
                        for durability in durabilities:
                            label = f"{version} [{durability}]" if durability else version
                            topic = f"measure-log-{uuid.uuid4().hex[:10]}"
                            create_topic(bootstrap, topic)
                            if registry.startswith("http"):
                                register(registry, topic)
                            spool = Path(tmp) / f"spool-{uuid.uuid4().hex[:8]}"
                            print(
                                f"[measure] round {round_ + 1}: {label}, rate {rate or 'max'}",
                                file=sys.stderr,
                            )
                            r = run_child(
                                code,
                                bootstrap,
                                topic,
                                spool,
                                args.records,
                                rate,
                                durability,
                                registry,
                            )
                            results.setdefault((label, rate), []).append(r)
        finally:
            delete_created_topics()
    print(
        f"{args.records} records of ~1 KB, {args.rounds} round(s), medians; process on core "
        f"{CORE}; load avg {Path('/proc/loadavg').read_text().split()[0]}"
    )
    print(f"{'version':36} {'rate':>6} {'records/s':>10} {'CPU µs/rec':>10} {'core':>5}")
    for (label, rate), runs in results.items():
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        print(
            f"{label:36} {rate or 'max':>6} {med['records_per_s']:10.0f} "
            f"{med['cpu_us_per_record']:10.1f} {med['cpu_share']:5.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
