"""Our sidecar in the benchmark: its configurations on the request path (auth by API key or by
Kubernetes token with a warm cache; inference log off, or on into the real broker; traces off,
or exported to a real Jaeger at a sampling ratio), the broker outage, the inference log's
throughput, and a profile of the hot path."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import REPO
from bench.harness import load
from bench.harness.environment import jaeger_start, jaeger_stop, localenv_kafka, localenv_settings
from bench.harness.procs import PROXY_CORE, BenchError, PeakRss, Proc, free_port, log, run_pinned
from bench.harness.stats import as_dict, records_lost
from bench.harness.topics import create_topic, delete_created_topics, topic_records, wait_topic
from bench.parts.request_path import (
    OUTAGE_SECONDS,
    Bench,
    Configuration,
    Outage,
    run_vegeta_background,
    upstream,
    with_pylib,
)
from modelserving.api import LOG_COMPRESSION
from modelserving_sidecar.config import LogDurability

# Several model versions (the nginx upstream reports versions 1, 2 and 3 AVAILABLE): the split's
# cost per request (a hash of the request id, a table lookup) and a 10% shadow's (a second
# request to the upstream and a second record for one request in ten), beside one version.
SPLIT = {
    "versions": [
        {"version": 1, "weight": 90, "labels": ["stable"]},
        {"version": 2, "weight": 10, "labels": ["canary"]},
    ]
}
ROUTINGS = {
    "split 90/10": SPLIT,
    "split 90/10 + shadow 10%": {**SPLIT, "shadow": {"version": 3, "percent": 10}},
}
# The one-version sidecar the variants are set beside, and each variant's configuration name.
ONE_VERSION = "sidecar, apiKey, log on"


def versions_configuration(variant: str) -> str:
    """The name of the log-on sidecar over ROUTINGS[variant] (in make bench and bench-sidecar)."""
    return f"sidecar [{variant}], apiKey, log on"


# Traces of the log-on sidecar exported to a real Jaeger (the load sends no traceparent, so the
# ratio is the share of requests sampled), each beside the same sidecar with no collector
# (ONE_VERSION, tracing off): a collector named with nothing sampled, 1% and 100% sampled.
TRACING_RATIOS = {"0%": 0.0, "1%": 0.01, "100%": 1.0}


def tracing_configuration(label: str) -> str:
    """The name of the log-on sidecar with TRACING_RATIOS[label] (in make bench)."""
    return f"sidecar, apiKey, log on, traces to Jaeger, {label} sampled"


NAMESPACE_PREFIX = "bench-"
API_KEY = "bench-key-" + "x" * 32
# The log on as the defaults have it is durable (spooled); buffered beside it, for its cost.
BUFFERED = "sidecar, apiKey, log on, buffered"
SASL_SSL = "sidecar, apiKey, log on over SASL_SSL"


def sidecar_importable() -> str | None:
    """None when `modelserving sidecar` can run here, else why not."""
    try:
        import modelserving_sidecar.main  # noqa: F401
    except ImportError as exc:
        return f"the sidecar cannot be imported yet: {exc}"
    return None


@dataclass
class SidecarBench:
    bench: Bench
    env: dict[str, Any] | None
    why_not: str | None = None
    keys_dir: Path | None = None
    namespace: str | None = None
    token: str | None = None
    jaeger: str | None = None  # a real Jaeger's OTLP/HTTP traces URL, when one was started
    notes: list[str] = field(default_factory=list)

    @property
    def runnable(self) -> bool:
        return self.why_not is None

    @property
    def bootstrap(self) -> str | None:
        return (self.env or {}).get("kafka_bootstrap")

    @classmethod
    def prepare(
        cls,
        bench: Bench,
        env: dict[str, Any] | None,
        kubernetes: bool = True,
        tracing: bool = False,
    ) -> SidecarBench:
        """The API key, with `kubernetes` a namespace and a caller's token in the local
        cluster for the Kubernetes auth configurations, and with `tracing` a Jaeger of the
        benchmark's own for the tracing configurations (stopped by `close`)."""
        self = cls(bench, env, why_not=sidecar_importable())
        if not self.runnable:
            log(f"sidecar configurations skipped: {self.why_not}")
            return self
        from modelserving_sidecar.auth.api_keys import hash_api_key

        self.keys_dir = bench.workdir / "apikeys"
        self.keys_dir.mkdir()
        (self.keys_dir / "bench").write_text(hash_api_key(API_KEY))
        if kubernetes:
            try:
                self._prepare_kubernetes()
            except (BenchError, OSError, subprocess.SubprocessError) as exc:
                self.notes.append(f"Kubernetes auth skipped: {str(exc)[-300:]}")
                log(self.notes[-1])
        if not self.bootstrap:
            self.notes.append("log-on configurations skipped: no Kafka broker (.localenv)")
        elif tracing:
            try:
                self.jaeger = jaeger_start()
            except (BenchError, OSError, subprocess.SubprocessError) as exc:
                self.notes.append(f"tracing configurations skipped: {str(exc)[-300:]}")
                log(self.notes[-1])
        return self

    # ------------------------------------------------------------ Kubernetes

    def kubectl(self, *args: str, stdin: str | None = None) -> str:
        env = self.env or {}
        proc = subprocess.run(
            ["kubectl", "--kubeconfig", env["kubeconfig"], *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PATH": f"{env['path']}:{os.environ['PATH']}"},
        )
        if proc.returncode != 0:
            raise BenchError(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")
        return proc.stdout

    def _prepare_kubernetes(self) -> None:
        if not self.env or not Path(self.env.get("kubeconfig", "")).exists():
            raise BenchError("no local cluster (.localenv/env.json)")
        self.namespace = f"{NAMESPACE_PREFIX}{uuid.uuid4().hex[:6]}"
        manifest = {
            "apiVersion": "v1",
            "kind": "List",
            "items": [
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.namespace}},
                {
                    "apiVersion": "v1",
                    "kind": "ServiceAccount",
                    "metadata": {"name": "caller", "namespace": self.namespace},
                },
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "Role",
                    "metadata": {"name": "predict", "namespace": self.namespace},
                    "rules": [
                        {
                            "apiGroups": ["modelserving.io"],
                            "resources": ["modelservings/predict"],
                            "verbs": ["create"],
                        }
                    ],
                },
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "RoleBinding",
                    "metadata": {"name": "predict", "namespace": self.namespace},
                    "roleRef": {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "Role",
                        "name": "predict",
                    },
                    "subjects": [
                        {"kind": "ServiceAccount", "name": "caller", "namespace": self.namespace}
                    ],
                },
            ],
        }
        self.kubectl("apply", "-f", "-", stdin=json.dumps(manifest))
        self.token = self.kubectl(
            "create", "token", "caller", "-n", self.namespace, "--duration", "1h"
        ).strip()

    def close(self) -> None:
        delete_created_topics()
        if self.jaeger:
            jaeger_stop()
            self.jaeger = None
        if self.namespace:
            with contextlib.suppress(BenchError, subprocess.SubprocessError):
                self.kubectl("delete", "namespace", self.namespace, "--wait=false")

    # ------------------------------------------------------------ the sidecar

    def render_config(
        self,
        port: int,
        auth: str,
        topic: str | None,
        spool: Path,
        routing: dict[str, Any] | None = None,
        grpc: dict[str, Any] | None = None,
        tracing: dict[str, Any] | None = None,
        **logging: Any,
    ) -> Path:
        """A sidecar config file as the operator would render it (JSON is YAML), in a folder of
        its own with the routing file beside it when `routing` is given (else one version), a
        gRPC port as `grpc` says (else none), and the `tracing` section when given."""
        config: dict[str, Any] = {
            "serving": {"name": load.MODEL, "namespace": self.namespace or "bench"},
            "model": {"name": load.MODEL, "version": 1, "modelId": 1},
            "listen": {"host": "127.0.0.1", "port": port},
            "grpc": grpc or {"port": 0},  # no gRPC port unless asked for
            "upstream": {"url": f"http://127.0.0.1:{self.bench.upstream_port}"},
            "auth": {"mode": auth, "apiKeysDir": str(self.keys_dir)},
            "logging": {"mode": "NONE"},
        }
        if tracing is not None:
            config["tracing"] = tracing
        if topic:
            config["logging"] = {
                "mode": "ALL",
                "topic": topic,
                "bootstrapServers": self.bootstrap,
                "spoolDir": str(spool),
                **logging,
            }
        # A folder of each start's own: a port free again is given to a later sidecar too.
        folder = Path(tempfile.mkdtemp(prefix=f"sidecar-{port}-", dir=self.bench.workdir))
        if routing is not None:
            (folder / "routing.yaml").write_text(json.dumps(routing, indent=1))
        path = folder / "sidecar.yaml"
        path.write_text(json.dumps(config, indent=1))
        return path

    def headers(self, auth: str) -> dict[str, str]:
        if auth == "kubernetes":
            return {"Authorization": f"Bearer {self.token}"}
        return {"Authorization": f"ApiKey {API_KEY}"}

    @contextlib.contextmanager
    def running(
        self,
        auth: str,
        log_on: bool,
        loop: str = "as installed",
        code: Path | None = None,
        routing: dict[str, Any] | None = None,
        grpc: dict[str, Any] | None = None,
        tracing: dict[str, Any] | None = None,
        **logging: Any,
    ) -> Iterator[tuple[Proc, load.Target, str | None]]:
        """The sidecar with this auth, its inference log on or off (`logging` adds to the log's
        settings), over several model versions as `routing` says (see ROUTINGS), with the gRPC
        settings `grpc` (else no gRPC port); `code` is a tree from `tree_at` whose sidecar runs
        instead of this one."""
        port = free_port()
        topic = f"bench-{uuid.uuid4().hex[:10]}" if log_on else None
        if topic:
            create_topic(self.bootstrap or "", topic)
        spool = self.bench.workdir / f"spool-{port}-{uuid.uuid4().hex[:8]}"  # none replayed
        config = self.render_config(port, auth, topic, spool, routing, grpc, tracing, **logging)
        proc = self.process(config, port, "sidecar", loop, code)
        try:
            yield proc, load.Target(port, headers=self.headers(auth)), topic
        finally:
            proc.stop(timeout=30)

    def process(
        self,
        config: Path,
        port: int,
        name: str,
        loop: str = "as installed",
        code: Path | None = None,
        core: int = PROXY_CORE,
    ) -> Proc:
        """`modelserving sidecar --config CONFIG` started on `core` (the proxy's), listening."""
        run_sidecar = "from modelserving.cli import main; raise SystemExit(main())"
        env = {"KUBECONFIG": (self.env or {}).get("kubeconfig", ""), "POD_NAME": "bench"}
        # The sidecar runs on uvloop when it can import it: "asyncio" hides it, "uvloop" adds
        # the benchmark's own copy, "as installed" leaves the project's environment as it is.
        if loop == "asyncio":
            run_sidecar = "import sys; sys.modules['uvloop'] = None; " + run_sidecar
        elif loop == "uvloop":
            env["PYTHONPATH"] = with_pylib(self.bench)
        cmd = [
            sys.executable,
            "-c",
            run_sidecar,
            "sidecar",
            "--config",
            str(config),
            "--log-level",
            "WARNING",
        ]
        # Started in the tree, Python finds that revision's `modelserving` first.
        return Proc(name, cmd, core, self.bench.workdir, env=env, port=port, cwd=code)

    def configuration(
        self,
        name: str,
        auth: str,
        log_on: bool,
        loop: str = "as installed",
        code: Path | None = None,
        routing: dict[str, Any] | None = None,
        tracing: dict[str, Any] | None = None,
        **logging: Any,
    ) -> Configuration:
        @contextlib.contextmanager
        def start(bench: Bench) -> Iterator[tuple[Proc, load.Target]]:
            with self.running(auth, log_on, loop, code, routing, tracing=tracing, **logging) as (
                proc,
                target,
                _,
            ):
                yield proc, target

        return Configuration(name, start, group="ours")

    # ------------------------------------------------------------ part 2

    def broker_outage(self, outage: Outage) -> dict[str, Any]:
        """Our sidecar, log on, while the Kafka broker is stopped for 10 s."""
        with upstream(self.bench), self.running("apiKey", True) as (proc, target, topic):
            load.wrk(self.bench.tools.wrk, target, self.bench.workdir, seconds=1)
            before = topic_records(self.bootstrap or "", topic or "")[0]
            with PeakRss(proc) as rss:
                wait = run_vegeta_background(self.bench, target, outage)
                time.sleep(outage.down_at)
                localenv_kafka("stop")
                try:
                    time.sleep(OUTAGE_SECONDS)
                finally:
                    localenv_kafka("start")
                lat = wait()
            answered = lat.answered
            delivered, distinct = wait_topic(self.bootstrap or "", topic or "", before + answered)
        delivered, distinct = topic_records(self.bootstrap or "", topic or "")
        return {
            "rate": outage.rate,
            "seconds": outage.seconds,
            "broker_down_seconds": OUTAGE_SECONDS,
            "requests_answered": answered,
            "records_delivered": distinct - before,
            "records_on_topic_with_duplicates": delivered - before,
            "records_lost": records_lost(answered, distinct - before),
            "rss_peak_mib": round(rss.peak_mib, 1),
            "latency": as_dict(lat),
        }


def configurations(bench: Bench) -> list[Configuration]:
    side: SidecarBench | None = bench.sidecar
    if side is None or not side.runnable:
        return []
    configs = [side.configuration("sidecar, apiKey, log off", "apiKey", False)]
    if side.bootstrap:
        configs.append(side.configuration(ONE_VERSION, "apiKey", True))
        configs.append(
            side.configuration(BUFFERED, "apiKey", True, durability=LogDurability.BUFFERED.value)
        )
        if side.jaeger:  # next to the log-on sidecar they are set beside
            configs += tracing_configurations(side)
    if side.token:
        configs.append(side.configuration("sidecar, kubernetes, log off", "kubernetes", False))
        if side.bootstrap:
            configs.append(side.configuration("sidecar, kubernetes, log on", "kubernetes", True))
    if side.bootstrap and (localenv_settings() or {}).get("kafka", {}).get("sasl_ssl_bootstrap"):
        configs.append(over_sasl_ssl(side, SASL_SSL, None))
    if side.bootstrap:
        for variant, routing in ROUTINGS.items():
            configs.append(
                side.configuration(versions_configuration(variant), "apiKey", True, routing=routing)
            )
        # The other event loop than the one the project's environment gives, side by side.
        other = "asyncio" if uvloop_available() else "uvloop"
        if other == "asyncio" or bench.tools.pylib:
            name = f"sidecar, apiKey, log on, {other} loop"
            configs.append(side.configuration(name, "apiKey", True, loop=other))
    return configs


def tracing_configurations(side: SidecarBench, code: Path | None = None) -> list[Configuration]:
    """The log-on sidecar exporting its spans to the benchmark's Jaeger at each of
    TRACING_RATIOS."""
    return [
        side.configuration(
            tracing_configuration(label),
            "apiKey",
            True,
            code=code,
            tracing={"endpoint": side.jaeger, "ratio": ratio},
        )
        for label, ratio in TRACING_RATIOS.items()
    ]


def over_sasl_ssl(side: SidecarBench, name: str, code: Path | None) -> Configuration:
    """The log-on sidecar producing over SASL_SSL; a run whose records did not reach the topic
    (a refused producer spools them and answers as fast) fails rather than counting."""

    @contextlib.contextmanager
    def start(bench: Bench) -> Iterator[tuple[Proc, load.Target]]:
        with side.running("apiKey", True, code=code, **sasl_ssl_logging()) as (proc, target, topic):
            yield proc, target
        if topic_records(side.bootstrap or "", topic or "")[0] == 0:
            raise RuntimeError(f"no record reached {topic} over SASL_SSL")

    return Configuration(name, start, group="ours")


def sasl_ssl_logging() -> dict[str, object]:
    """The log's settings for the local broker's SASL_SSL listener (SCRAM-SHA-512)."""
    kafka = (localenv_settings() or {}).get("kafka")
    if not kafka:
        raise BenchError("the log over SASL_SSL needs the local environment up (make env-up)")
    return {
        "bootstrapServers": kafka["sasl_ssl_bootstrap"],
        "kafkaSecurity": {
            "protocol": "SASL_SSL",
            "caFile": kafka["ca_file"],
            "saslMechanism": "SCRAM-SHA-512",
            "username": kafka["user"],
            "passwordFile": kafka["password_file"],
        },
    }


def uvloop_available() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


# ------------------------------------------------------------ part 3


def inference_log_throughput(bench: Bench, records: int = 60_000) -> dict[str, Any]:
    """One process, the pipeline as the sidecar runs it, into the real broker; with the
    default producer compression (zstd), gzip and none, side by side."""
    side: SidecarBench | None = bench.sidecar
    if side is None or not side.runnable or not side.bootstrap:
        return {"notes": ["skipped: the sidecar or the broker is not available"]}
    runs = []
    for compression in (LOG_COMPRESSION, "gzip", "none"):
        topic = f"bench-log-{uuid.uuid4().hex[:8]}"
        try:
            create_topic(side.bootstrap, topic)
            out = run_pinned(
                [
                    sys.executable,
                    "-m",
                    "bench.parts.log_throughput",
                    "--bootstrap",
                    side.bootstrap,
                    "--topic",
                    topic,
                    "--records",
                    str(records),
                    "--compression",
                    compression,
                    "--spool",
                    str(bench.workdir / f"logspool-{compression}"),
                ],
                PROXY_CORE,
                timeout=300,
                cwd=REPO,
            )
            result = json.loads(out.strip().splitlines()[-1])
            total, distinct = topic_records(side.bootstrap, topic)
            result.update(records_on_topic=total, distinct_records_on_topic=distinct)
        except (BenchError, subprocess.SubprocessError, ValueError) as exc:
            result = {"compression": compression, "error": str(exc)[-1000:]}
        result["default"] = compression == LOG_COMPRESSION
        runs.append(result)
    return {
        "notes": [
            f"{records:,} records of ~1 KB (a 64-float request and its answer), acks=all, "
            f"idempotent producer, spool on local disk; the process on core {PROXY_CORE}; "
            "encode = SpoolRecordMaker.make (the pipeline's encoder), best of 5 rounds; "
            "submit = what the request path pays"
        ],
        "runs": runs,
    }


# ------------------------------------------------------------ part 5


def profile(bench: Bench, seconds: int = 10) -> dict[str, Any]:
    """py-spy over the sidecar (apiKey, log on) at saturation: the top functions by own time."""
    side: SidecarBench | None = bench.sidecar
    py_spy = bench.tools.py_spy
    if side is None or not side.runnable or not py_spy:
        return {"notes": ["skipped: the sidecar or py-spy is not available"]}
    raw = bench.workdir / "profile.txt"
    with upstream(bench), side.running("apiKey", bool(side.bootstrap)) as (proc, target, _):
        load.wrk(bench.tools.wrk, target, bench.workdir, seconds=1)
        spy = subprocess.Popen(
            [
                py_spy,
                "record",
                "--pid",
                str(_python_pid(proc)),
                "--duration",
                str(seconds),
                "--rate",
                "250",
                "--gil",
                "--format",
                "raw",
                "--output",
                str(raw),
                "--nonblocking",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        load.wrk(bench.tools.wrk, target, bench.workdir, seconds=seconds + 1)
        _, err = spy.communicate(timeout=60)
        if spy.returncode != 0:
            return {"notes": [f"py-spy failed: {err.strip()[-500:]}"]}
    from bench.harness.stats import by_package, top_frames

    own, inclusive, samples = top_frames(raw.read_text())
    return {
        "notes": [
            f"py-spy {seconds} s at 250 Hz, only samples holding the GIL (--gil), over the "
            "sidecar (apiKey, log on) saturated by wrk; shares are of those samples"
        ],
        "samples": samples,
        "own_time_by_package": by_package(own)[:10],
        "top_own": own[:15],
        "top_inclusive": inclusive[:20],
    }


def _python_pid(proc: Proc) -> int:
    """The Python process itself: taskset execs, so it is the started pid."""
    return proc.pid
