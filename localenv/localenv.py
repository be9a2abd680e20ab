#!/usr/bin/env python3
"""The local environment of real parts that the tests and the demo run against.

A real Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, built from source through the Go module proxy, with KWOK
making nodes and Pods Ready), a real Kafka broker (KRaft, jars from Maven
Central), the real helm and kubectl binaries, Debian's prometheus and promtool
(installed with apt-get when missing), and Jaeger v2 (built from the Go module proxy; the
tracing tests start one of their own, `jaeger_start`, as `up` does not). Builds are cached
outside the repo, keyed by version; `up` starts the parts and writes `env.sh`, which a shell
can source, and `env.json`; `down` stops them.

The broker listens in plain text (what most tests use) and, beside it, as a
secured Kafka does: TLS, mutual TLS, and SASL over TLS (PLAIN, SCRAM-SHA-256,
SCRAM-SHA-512), with a CA and certificates made at start (kafka_certs.py) and
the client files (CA, certificate, key, password, Kafka client properties) in
the state folder, named by `env.sh`. The standard library and `cryptography`
only (the project's virtualenv has it).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KUBERNETES_VERSION = "v1.36.3"
ETCD_VERSION = "v3.6.16"
KWOK_VERSION = "v0.8.0"
HELM_VERSION = "v3.22.0"
KAFKA_VERSION = "4.3.1"
# Jaeger v2: an OpenTelemetry Collector with an in-memory store and a query API, the trace
# backend of the tracing tests (started on demand by jaeger_start, not by `up`).
JAEGER_VERSION = "v1.75.0"
LOG4J_VERSION = "2.25.3"
SLF4J_VERSION = "2.0.17"

# KWOK's nodes (32 CPUs and 110 pods each): room for what the tests running side by side ask
# at once, one of them 100 servings whose pods request 0.6 CPU each (two nodes held 106 such
# pods: the others' stayed Pending, "Insufficient cpu").
NODE_COUNT = 8
HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CACHE = Path(os.environ.get("MODELSERVING_CACHE", Path.home() / ".cache" / "modelserving"))
STATE = Path(os.environ.get("MODELSERVING_LOCALENV", REPO / ".localenv"))
# One cluster per state folder, so that two checkouts (a developer's and CI's
# clean clone) never take over each other's cluster.
CLUSTER_NAME = "modelserving-" + hashlib.sha256(str(STATE).encode()).hexdigest()[:8]
# Where kwokctl keeps that cluster: its components' binaries, logs and pid files.
CLUSTER_DIR = Path.home() / ".kwok" / "clusters" / CLUSTER_NAME

KUBE_COMMANDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")


class EnvError(RuntimeError):
    """A part of the environment could not be built or started; the message says which."""


def log(message: str) -> None:
    print(f"[localenv] {message}", file=sys.stderr, flush=True)


def run(cmd: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    """Run a command; on failure raise EnvError with the tail of its output."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run(
        cmd, cwd=cwd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.splitlines()[-40:])
        raise EnvError(f"`{' '.join(cmd)}` failed with exit code {proc.returncode}:\n{tail}")
    return proc.stdout


def go_env(gobin: Path | None = None) -> dict[str, str]:
    env = {"GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod", "CGO_ENABLED": "0"}
    if gobin:
        env["GOBIN"] = str(gobin)
    return env


# --------------------------------------------------------------------------- build progress

# The parts a build makes, in the order it makes them, as its progress names them. Kubernetes
# is five steps (its modules, then each command) because it is most of a cold build's time.
BUILD_STEPS = (
    "Kafka",
    "etcd",
    "KWOK",
    "helm",
    "Jaeger",
    "Kubernetes modules",
    *KUBE_COMMANDS,
)
# How often a step that is still running says so: a cold `go build` of kube-apiserver runs for
# minutes without printing anything.
HEARTBEAT_S = 15.0


def format_duration(seconds: float) -> str:
    """`42s`, `3m12s`, `1h02m05s`: how long a step took or has been running."""
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


@dataclass
class BuildProgress:
    """What a build says while it runs: which step is building and how far along the build is
    (`building kube-apiserver (7/10)`), a heartbeat with the time so far every `heartbeat_s`
    while a step runs, and a summary with each step's time (or `cached`) at the end."""

    cached: frozenset[str]
    say: Callable[[str], None] = log
    heartbeat_s: float = HEARTBEAT_S
    clock: Callable[[], float] = time.monotonic
    times: dict[str, float] = field(default_factory=dict)

    @property
    def to_build(self) -> list[str]:
        return [name for name in BUILD_STEPS if name not in self.cached]

    def position(self, name: str) -> str:
        """`(7/10)`: where the step is among those this build makes."""
        return f"({self.to_build.index(name) + 1}/{len(self.to_build)})"

    def plan(self) -> str:
        """What the build will do, said before it starts."""
        building = ", ".join(self.to_build)
        cached = f"; cached: {', '.join(s for s in BUILD_STEPS if s in self.cached)}"
        return (
            f"building {building} into {CACHE}{cached if self.cached else ''} "
            "(about 12 minutes on 2 cores with empty Go caches; later runs use this cache)"
        )

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Say the step starts, say every `heartbeat_s` that it still runs, time it."""
        started = self.clock()
        self.say(f"building {name} {self.position(name)}")
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(self.heartbeat_s):
                elapsed = format_duration(self.clock() - started)
                self.say(f"building {name} {self.position(name)} ... {elapsed}")

        heart = threading.Thread(target=beat, name=f"heartbeat {name}", daemon=True)
        heart.start()
        try:
            yield
        finally:
            stop.set()
            heart.join()
        self.times[name] = self.clock() - started
        self.say(f"built {name} {self.position(name)} in {format_duration(self.times[name])}")

    def summary(self, total_s: float) -> list[str]:
        """The lines said at the end: the whole build's time, then each step's."""
        if not self.to_build:
            return [f"builds ready in {CACHE}: all {len(BUILD_STEPS)} parts cached"]
        width = max(len(name) for name in BUILD_STEPS)
        lines = [f"builds ready in {CACHE} in {format_duration(total_s)}:"]
        for name in BUILD_STEPS:
            took = "cached" if name in self.cached else format_duration(self.times.get(name, 0))
            lines.append(f"  {name:<{width}}  {took:>8}")
        return lines


# --------------------------------------------------------------------------- builds


def kube_bin() -> Path:
    return CACHE / f"kubernetes-{KUBERNETES_VERSION}" / "bin"


def etcd_bin() -> Path:
    return CACHE / f"etcd-{ETCD_VERSION}" / "bin"


def kwok_bin() -> Path:
    return CACHE / f"kwok-{KWOK_VERSION}" / "bin"


def helm_bin() -> Path:
    return CACHE / f"helm-{HELM_VERSION}" / "bin"


def jaeger_bin() -> Path:
    return CACHE / f"jaeger-{JAEGER_VERSION}" / "bin"


def kafka_libs() -> Path:
    return CACHE / f"kafka-{KAFKA_VERSION}" / "libs"


def bin_dirs() -> list[Path]:
    return [kube_bin(), etcd_bin(), kwok_bin(), helm_bin()]


def write_wrapper_module(workdir: Path, module: str, requires: str, imports: list[str]) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "go.mod").write_text(f"module {module}\n\ngo 1.26\n\nrequire {requires}\n")
    lines = "\n".join(f'\t_ "{imp}"' for imp in imports)
    (workdir / "tools.go").write_text(
        f"//go:build tools\n\npackage tools\n\nimport (\n{lines}\n)\n"
    )


def kubernetes_cached() -> bool:
    return all((kube_bin() / name).exists() for name in KUBE_COMMANDS)


def build_kubernetes(progress: BuildProgress) -> None:
    if kubernetes_cached():
        return
    out = kube_bin()
    work = CACHE / f"kubernetes-{KUBERNETES_VERSION}" / "src"
    with progress.step("Kubernetes modules"):
        write_wrapper_module(
            work,
            "modelserving.local/kubernetes",
            f"k8s.io/kubernetes {KUBERNETES_VERSION}",
            [f"k8s.io/kubernetes/cmd/{name}" for name in KUBE_COMMANDS],
        )
        info = json.loads(
            run(
                ["go", "mod", "download", "-json", f"k8s.io/kubernetes@{KUBERNETES_VERSION}"],
                work,
            )
        )
        # k8s.io/kubernetes replaces its staging modules with ./staging folders the
        # module zip lacks; point each at its published twin (v1.x.y -> v0.x.y).
        staging = re.findall(
            r"^\s*(k8s\.io/\S+)\s+=>\s+\./staging/", Path(info["GoMod"]).read_text(), re.M
        )
        if not staging:
            raise EnvError("found no staging replaces in k8s.io/kubernetes' go.mod")
        published = "v0." + KUBERNETES_VERSION.split(".", 1)[1]
        with (work / "go.mod").open("a") as f:
            f.write("\nreplace (\n")
            f.writelines(f"\t{mod} => {mod} {published}\n" for mod in staging)
            f.write(")\n")
        run(["go", "mod", "tidy"], work, go_env())
    major, minor = KUBERNETES_VERSION.lstrip("v").split(".")[:2]
    ldflags = " ".join(
        [
            f"-X k8s.io/component-base/version.gitVersion={KUBERNETES_VERSION}",
            f"-X k8s.io/component-base/version.gitMajor={major}",
            f"-X k8s.io/component-base/version.gitMinor={minor}",
            "-X k8s.io/component-base/version.gitTreeState=clean",
            f"-X k8s.io/client-go/pkg/version.gitVersion={KUBERNETES_VERSION}",
            f"-X k8s.io/client-go/pkg/version.gitMajor={major}",
            f"-X k8s.io/client-go/pkg/version.gitMinor={minor}",
            "-s -w",
        ]
    )
    tmp = out.with_name("bin.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    # One command a build, so that the progress can say which: the packages they share are
    # compiled once, by the first, and come from Go's build cache for the others.
    for name in KUBE_COMMANDS:
        with progress.step(name):
            package = f"k8s.io/kubernetes/cmd/{name}"
            command = ["go", "build", "-ldflags", ldflags, "-o", str(tmp / name), package]
            run(command, work, go_env())
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


def etcd_cached() -> bool:
    return (etcd_bin() / "etcd").exists()


def build_etcd(progress: BuildProgress) -> None:
    if etcd_cached():
        return
    with progress.step("etcd"):
        _build_etcd()


def _build_etcd() -> None:
    out = etcd_bin()
    work = CACHE / f"etcd-{ETCD_VERSION}" / "src"
    write_wrapper_module(
        work,
        "modelserving.local/etcd",
        f"go.etcd.io/etcd/server/v3 {ETCD_VERSION}",
        ["go.etcd.io/etcd/server/v3"],
    )
    run(["go", "mod", "tidy"], work, go_env())
    out.mkdir(parents=True, exist_ok=True)
    run(
        ["go", "build", "-ldflags", "-s -w", "-o", str(out / "etcd"), "go.etcd.io/etcd/server/v3"],
        work,
        go_env(),
    )


def jaeger_cached() -> bool:
    return (jaeger_bin() / "jaeger").exists()


def build_jaeger(progress: BuildProgress) -> None:
    if jaeger_cached():
        return
    with progress.step("Jaeger"):
        _build_jaeger()


def _build_jaeger() -> None:
    out = jaeger_bin()
    work = CACHE / f"jaeger-{JAEGER_VERSION}" / "src"
    package = "github.com/jaegertracing/jaeger/cmd/jaeger"
    work.mkdir(parents=True, exist_ok=True)
    (work / "go.mod").write_text("module modelserving.local/jaeger\n\ngo 1.26\n")
    # `go get -tool` resolves the command's whole module graph (the OpenTelemetry Collector's
    # many modules) in one step, as the control plane's wrapper module does with tidy.
    run(["go", "get", "-tool", f"{package}@{JAEGER_VERSION}"], work, go_env())
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "jaeger.tmp"
    run(["go", "build", "-ldflags", "-s -w", "-o", str(tmp), package], work, go_env())
    tmp.rename(out / "jaeger")


def go_install(out: Path, packages: list[str], ldflags: str = "") -> None:
    out.mkdir(parents=True, exist_ok=True)
    run(["go", "install", "-ldflags", f"-s -w {ldflags}", *packages], CACHE, go_env(out))


def kafka_cached() -> bool:
    out = kafka_libs()
    return out.exists() and any(out.glob("kafka_2.13-*.jar"))


def build_kafka(progress: BuildProgress) -> None:
    if kafka_cached():
        return
    with progress.step("Kafka"):
        _fetch_kafka()


def _fetch_kafka() -> None:
    """Kafka's jars from Maven Central."""
    out = kafka_libs()
    tmp = out.with_name("libs.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    run(
        [
            "mvn",
            "-q",
            "-B",
            "-f",
            str(HERE / "kafka" / "pom.xml"),
            f"-Dkafka.version={KAFKA_VERSION}",
            f"-Dlog4j.version={LOG4J_VERSION}",
            f"-Dslf4j.version={SLF4J_VERSION}",
            "dependency:copy-dependencies",
            f"-DoutputDirectory={tmp}",
            "-DincludeScope=runtime",
        ]
    )
    tmp.rename(out)


PROMETHEUS_COMMANDS = ("prometheus", "promtool")


def prometheus_service_running() -> bool:
    """Whether a Prometheus started by the system (Debian's service) runs: the tests start their
    own, with their own config, storage and port."""
    if shutil.which("pgrep") is None:
        return False
    return subprocess.run(["pgrep", "-x", "prometheus"], capture_output=True).returncode == 0


def install_prometheus() -> None:
    """Debian's `prometheus` package (the server and promtool) for the tests that scrape the
    sidecar and operator and check the chart's alerts. Installing may start the package's
    service (where an init system runs): it is stopped and disabled, the tests need none."""
    if all(shutil.which(name) for name in PROMETHEUS_COMMANDS):
        return
    if shutil.which("apt-get") is None:
        raise EnvError("prometheus and promtool are missing, and no apt-get to install them")
    log("installing Debian's prometheus package (prometheus, promtool)")
    was_running = prometheus_service_running()
    # Wait for a dpkg lock another install holds rather than fail on it.
    apt = ["apt-get", "-o", "DPkg::Lock::Timeout=300"]
    install = [*apt, "install", "-y", "--no-install-recommends", "prometheus"]
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    try:
        run(install, env=env)
    except EnvError:  # a fresh machine's package lists may be missing or stale
        run([*apt, "update"], env=env)
        run(install, env=env)
    if not was_running and prometheus_service_running():
        stops = (["systemctl", "disable", "--now", "prometheus"], ["service", "prometheus", "stop"])
        for stop in stops:
            if shutil.which(stop[0]):
                subprocess.run(stop, capture_output=True)
    missing = [name for name in PROMETHEUS_COMMANDS if shutil.which(name) is None]
    if missing:
        raise EnvError(f"apt-get installed prometheus but {', '.join(missing)} is not on PATH")


def check_tools() -> None:
    missing = [tool for tool in ("go", "java", "mvn") if shutil.which(tool) is None]
    if missing:
        raise EnvError(
            f"missing {', '.join(missing)} on PATH: the local environment builds Kubernetes, "
            "etcd, KWOK and helm with Go and fetches Kafka with Maven and runs it with Java"
        )


def kwok_cached() -> bool:
    return all((kwok_bin() / name).exists() for name in ("kwok", "kwokctl"))


def helm_cached() -> bool:
    return (helm_bin() / "helm").exists()


def cached_steps() -> frozenset[str]:
    """The build steps whose output is in the cache already."""
    cached = {
        "Kafka": kafka_cached(),
        "etcd": etcd_cached(),
        "KWOK": kwok_cached(),
        "helm": helm_cached(),
        "Jaeger": jaeger_cached(),
        "Kubernetes modules": kubernetes_cached(),
        **dict.fromkeys(KUBE_COMMANDS, kubernetes_cached()),
    }
    return frozenset(name for name, done in cached.items() if done)


def build() -> None:
    check_tools()
    CACHE.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    progress = BuildProgress(cached=cached_steps())
    if progress.to_build:
        log(progress.plan())
    build_kafka(progress)
    build_etcd(progress)
    install_prometheus()
    if not kwok_cached():
        with progress.step("KWOK"):
            go_install(
                kwok_bin(),
                [
                    f"sigs.k8s.io/kwok/cmd/kwok@{KWOK_VERSION}",
                    f"sigs.k8s.io/kwok/cmd/kwokctl@{KWOK_VERSION}",
                ],
            )
    if not helm_cached():
        with progress.step("helm"):
            go_install(
                helm_bin(),
                [f"helm.sh/helm/v3/cmd/helm@{HELM_VERSION}"],
                # helm prints its version from this variable; unset it says "v3.22".
                f"-X helm.sh/helm/v3/internal/version.version={HELM_VERSION}",
            )
    build_jaeger(progress)
    build_kubernetes(progress)
    for line in progress.summary(time.monotonic() - started):
        log(line)


# --------------------------------------------------------------------------- running


@dataclass(frozen=True)
class KafkaListeners:
    """The broker's secured listeners and the files a client of each needs."""

    ssl_bootstrap: str  # TLS: the client checks the broker against the CA
    mtls_bootstrap: str  # mutual TLS: the client shows its certificate too
    sasl_ssl_bootstrap: str  # SASL (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) over TLS
    ca_file: str  # the CA of the broker's certificate, PEM
    client_cert_file: str  # a client certificate the mutual-TLS listener accepts, PEM
    client_key_file: str  # its key, PKCS#8 PEM
    ca_key_file: str  # the CA's key: tests issue more certificates with it
    user: str  # the SASL user of every mechanism
    password_file: str  # its password, alone in the file
    client_dir: str  # Kafka client properties per listener (--command-config of Kafka's tools)


@dataclass(frozen=True)
class Settings:
    """Where the running environment can be reached; written to env.sh and env.json."""

    kubeconfig: str
    kafka_bootstrap: str
    path: str
    state_dir: str
    cluster_dir: str  # kwokctl's folder of the cluster: pids/<component>.pid, logs/
    kafka: KafkaListeners

    def shell(self) -> str:
        kafka = self.kafka
        return (
            f"export KUBECONFIG={self.kubeconfig}\n"
            f"export MODELSERVING_KAFKA_BOOTSTRAP={self.kafka_bootstrap}\n"
            "# The broker's secured listeners, and the files their clients need; "
            f"{kafka.client_dir} holds\n"
            "# a client properties file per listener and mechanism (modelserving logs "
            "--command-config FILE).\n"
            f"export MODELSERVING_KAFKA_SSL_BOOTSTRAP={kafka.ssl_bootstrap}\n"
            f"export MODELSERVING_KAFKA_MTLS_BOOTSTRAP={kafka.mtls_bootstrap}\n"
            f"export MODELSERVING_KAFKA_SASL_SSL_BOOTSTRAP={kafka.sasl_ssl_bootstrap}\n"
            f"export MODELSERVING_KAFKA_CA_FILE={kafka.ca_file}\n"
            f"export MODELSERVING_KAFKA_CLIENT_CERT_FILE={kafka.client_cert_file}\n"
            f"export MODELSERVING_KAFKA_CLIENT_KEY_FILE={kafka.client_key_file}\n"
            f"export MODELSERVING_KAFKA_USER={kafka.user}\n"
            f"export MODELSERVING_KAFKA_PASSWORD_FILE={kafka.password_file}\n"
            f"export MODELSERVING_KAFKA_CLIENT_DIR={kafka.client_dir}\n"
            f"export PATH={self.path}:$PATH\n"
        )


# Below Linux's ephemeral range (32768-60999), from which outgoing connections take their local
# ports: a port chosen here is not taken meanwhile by some connection (tests/support/ports hands
# out the tests' ports from this range too).
FREE_PORTS = range(20000, 32000)


def free_port(taken: Collection[int] = ()) -> int:
    """A free port of FREE_PORTS, not one of `taken`: one kept for a restart (Kafka's, across an
    outage test) must not be taken meanwhile by some outgoing connection."""
    for _ in range(200):
        port = random.choice(FREE_PORTS)
        if port not in taken and port_free(port):
            return port
    raise EnvError(f"found no free port between {FREE_PORTS.start} and {FREE_PORTS.stop - 1}")


def free_ports(names: Iterable[str], kept: Mapping[str, int] | None = None) -> dict[str, int]:
    """A free port for each name, all different (a part's listeners: two on one port fail its
    start), keeping those of `kept` (a restart reuses a part's ports) but for a port kept twice."""
    ports: dict[str, int] = {}
    for name, port in (kept or {}).items():
        if port and port not in ports.values():
            ports[name] = port
    for name in names:
        if not ports.get(name):
            ports[name] = free_port(taken=set(ports.values()))
    return ports


def port_free(port: int) -> bool:
    """Whether nothing holds the port on the loopback interface (it can be bound now)."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def tool_env() -> dict[str, str]:
    # kwokctl and helm call kubectl from PATH; ours goes first.
    path = os.pathsep.join(str(d) for d in bin_dirs())
    return {"PATH": f"{path}{os.pathsep}{os.environ.get('PATH', '')}"}


def kwokctl(*args: str) -> str:
    return run([str(kwok_bin() / "kwokctl"), *args], env=tool_env())


def kubectl(kubeconfig: Path, *args: str) -> str:
    return run([str(kube_bin() / "kubectl"), "--kubeconfig", str(kubeconfig), *args])


def cluster_kubeconfig() -> Path:
    return STATE / "kubeconfig"


# How long a recorded cluster may take to say it is ready before `up` recreates it: an API
# server busy under a test run's load, or still finishing its start, is not a dead one (and
# recreating it would take the cluster from under the tests that use it).
REUSE_READY_SECONDS = 60.0


def _answers(kubeconfig: Path) -> None:
    """Return once the recorded cluster's API server says it is ready; EnvError with its last
    answer when it has not within REUSE_READY_SECONDS."""
    deadline = time.monotonic() + REUSE_READY_SECONDS
    pid_file = CLUSTER_DIR / "pids" / "kube-apiserver.pid"
    while True:
        try:
            kubectl(kubeconfig, "get", "--raw", "/readyz", "--request-timeout=10s")
            return
        except EnvError:
            # No API server process (the machine restarted since): nothing to wait for.
            gone = not pid_file.exists() or not _running(
                Path(f"/proc/{pid_file.read_text().strip()}")
            )
            if gone or time.monotonic() > deadline:
                raise
            time.sleep(1.0)


def cluster_up() -> Path:
    kubeconfig = cluster_kubeconfig()
    if kubeconfig.exists():
        try:
            _answers(kubeconfig)
            if len(kubectl(kubeconfig, "get", "nodes", "-o", "name").split()) < NODE_COUNT:
                kwokctl("scale", "node", "--name", CLUSTER_NAME, "--replicas", str(NODE_COUNT))
            return kubeconfig
        except EnvError as exc:
            log(f"the recorded cluster does not answer; recreating it ({exc})")
    with contextlib.suppress(EnvError):
        kwokctl("delete", "cluster", "--name", CLUSTER_NAME)
    log(f"starting the control plane (Kubernetes {KUBERNETES_VERSION}, KWOK {KWOK_VERSION})")
    kwokctl(
        "create",
        "cluster",
        "--name",
        CLUSTER_NAME,
        "--runtime",
        "binary",
        "--kube-authorization",
        # The components' default client limits (20 requests/s for the controller-manager)
        # make a thousand Deployments take minutes to become available, whatever the operator does.
        "--disable-qps-limits",
        # The API server's default Service range is a /24: 254 Services, fewer than the
        # servings a scale test makes (each has a Service).
        "--extra-args",
        "kube-apiserver=service-cluster-ip-range=10.96.0.0/16",
        # One controller-manager and one scheduler, that must outlive an API server restart
        # (kube_apiserver_restart): with leader election they exit once their lease cannot be
        # renewed for 10 s, and here nothing would start them again.
        "--extra-args",
        "kube-controller-manager=leader-elect=false",
        "--extra-args",
        "kube-scheduler=leader-elect=false",
        "--kube-apiserver-binary",
        str(kube_bin() / "kube-apiserver"),
        "--kube-controller-manager-binary",
        str(kube_bin() / "kube-controller-manager"),
        "--kube-scheduler-binary",
        str(kube_bin() / "kube-scheduler"),
        "--etcd-binary",
        str(etcd_bin() / "etcd"),
        "--kwok-controller-binary",
        str(kwok_bin() / "kwok"),
        "--wait",
        "3m",
    )
    kwokctl("scale", "node", "--name", CLUSTER_NAME, "--replicas", str(NODE_COUNT))
    STATE.mkdir(parents=True, exist_ok=True)
    kubeconfig.write_text(kwokctl("get", "kubeconfig", "--name", CLUSTER_NAME))
    deadline = time.monotonic() + 120
    while True:
        try:
            kubectl(kubeconfig, "get", "--raw", "/readyz")
            nodes = kubectl(kubeconfig, "get", "nodes", "-o", "name").split()
            if len(nodes) >= NODE_COUNT:
                break
        except EnvError:
            pass
        if time.monotonic() > deadline:
            raise EnvError("the control plane did not become ready in 120 s")
        time.sleep(0.5)
    return kubeconfig


def cluster_down() -> None:
    if (kwok_bin() / "kwokctl").exists():
        try:
            kwokctl("delete", "cluster", "--name", CLUSTER_NAME)
        except EnvError as exc:
            log(str(exc))
    cluster_kubeconfig().unlink(missing_ok=True)


def kube_apiserver_restart(
    sig: int = signal.SIGKILL, down_seconds: float = 0.0, spare: str | None = None
) -> float:
    """Stop the cluster's kube-apiserver alone (etcd and the controllers keep running), by
    SIGKILL as in a crash unless told, and start it again with the same command line after
    `down_seconds` (an outage longer than a restart, when asked for); return
    the seconds it was away, until it was ready and authorizing requests again. For tests of
    the operator across an API server restart. (SIGTERM drains: the server goes on answering
    for a minute or more while it shuts down.) `spare` names a second API server of the
    cluster (spare_apiserver_start) to restart instead of the one everything else uses."""
    server = _apiserver_files(spare)
    proc = Path(f"/proc/{server.pid_file.read_text().strip()}")
    command = _apiserver_command(proc, server.saved)
    manager = Path(
        f"/proc/{(CLUSTER_DIR / 'pids' / 'kube-controller-manager.pid').read_text().strip()}"
    )
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        if b"--leader-elect=false" not in (manager / "cmdline").read_bytes():
            raise EnvError(
                "this cluster's controller-manager would exit while the API server is away "
                "(it was made before leader election was turned off): `make env-down env-up`"
            )
    port = _secure_port(command)
    stopped = time.monotonic()
    if _running(proc):
        os.kill(int(proc.name), sig)
    deadline = stopped + 60
    # Gone, and its port free: a killed server's threads may hold it a moment after its
    # first thread has ended.
    while (_running(proc) or port_open(port)) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _running(proc):
        os.kill(int(proc.name), signal.SIGKILL)
    if down_seconds > 0:
        # Keep the port meanwhile (bound, not listening: callers are refused as by a server that
        # is down), so that no other cluster on the machine picks it as a free port.
        with socket.socket() as holder:
            holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            holder.bind(("0.0.0.0", port))
            time.sleep(max(0.0, stopped + down_seconds - time.monotonic()))
    proc = _start_detached(command, server.log_file, server.pid_file)
    log(f"kube-apiserver stopped and started again ({time.monotonic() - stopped:.1f} s)")
    _await_authorizing(proc, command, server)
    return time.monotonic() - stopped


@dataclasses.dataclass(frozen=True)
class ApiServerFiles:
    """Where one kube-apiserver of the cluster keeps its process id, its log and its command
    line, and the admin kubeconfig that reaches it."""

    pid_file: Path
    log_file: Path
    saved: Path
    kubeconfig: Path


def _apiserver_files(spare: str | None) -> ApiServerFiles:
    if spare is None:
        return ApiServerFiles(
            pid_file=CLUSTER_DIR / "pids" / "kube-apiserver.pid",
            log_file=CLUSTER_DIR / "logs" / "kube-apiserver.log",
            saved=STATE / "kube-apiserver.json",
            kubeconfig=cluster_kubeconfig(),
        )
    home = SPARES / f"apiserver-{spare}"
    return ApiServerFiles(
        pid_file=home / "kube-apiserver.pid",
        log_file=home / "kube-apiserver.log",
        saved=home / "kube-apiserver.json",
        kubeconfig=home / "kubeconfig",
    )


def _secure_port(command: dict[str, Any]) -> int:
    return int(next(a for a in command["args"] if a.startswith("--secure-port=")).split("=")[1])


def _await_authorizing(proc: Path, command: dict[str, Any], server: ApiServerFiles) -> None:
    deadline = time.monotonic() + 120
    # Ready, and authorizing again: /readyz passes before the RBAC caches are filled, while
    # every request but an admin's is still refused (the discovery roles are granted to all).
    probe = ("auth", "can-i", "get", "/version", "--as=probe", "--as-group=system:authenticated")
    while True:
        if not _running(proc):  # it could not listen yet: try again
            proc = _start_detached(command, server.log_file, server.pid_file)
        try:
            kubectl(server.kubeconfig, "get", "--raw", "/readyz")
            if kubectl(server.kubeconfig, *probe).strip() == "yes":
                return
        except EnvError:
            pass
        if time.monotonic() > deadline:
            raise EnvError("the kube-apiserver did not authorize requests 120 s after a start")
        time.sleep(0.2)


# The parts a test has to itself: a second API server, a broker of its own (spare_*).
SPARES = STATE / "spares"


def spare_apiserver_start(name: str) -> Path:
    """Start (or keep) a second kube-apiserver of the cluster, over the same etcd on a port of
    its own, as in a highly available control plane; return an admin kubeconfig that reaches
    it. A test restarts it (kube_apiserver_restart with `spare`) to take the API server from
    the operator it tests, while every other client of the cluster keeps the first one."""
    server = _apiserver_files(name)
    if server.pid_file.exists() and _running(Path(f"/proc/{server.pid_file.read_text()}")):
        return server.kubeconfig
    server.pid_file.parent.mkdir(parents=True, exist_ok=True)
    main = _apiserver_files(None)
    first = _apiserver_command(Path(f"/proc/{main.pid_file.read_text().strip()}"), main.saved)
    port = free_port()
    # Not in the `kubernetes` Service's endpoints: those name the first server alone.
    command = {
        **first,
        "args": [a for a in first["args"] if not a.startswith("--secure-port=")]
        + [f"--secure-port={port}", "--endpoint-reconciler-type=none"],
    }
    server.saved.write_text(json.dumps(command))
    admin = cluster_kubeconfig().read_text()
    server.kubeconfig.write_text(admin.replace(f":{_secure_port(first)}\n", f":{port}\n"))
    if f":{port}\n" not in server.kubeconfig.read_text():
        raise EnvError(f"the admin kubeconfig names no server on port {_secure_port(first)}")
    proc = _start_detached(command, server.log_file, server.pid_file)
    _await_authorizing(proc, command, server)
    log(f"a second kube-apiserver on port {port} ({name})")
    return server.kubeconfig


def _apiserver_command(proc: Path, saved: Path) -> dict[str, Any]:
    """The running kube-apiserver's command line, environment and folder, kept in the state
    folder (`saved`) so that a server that a restart left down can still be started."""
    try:
        command = {
            "args": [a.decode() for a in (proc / "cmdline").read_bytes().split(b"\0")[:-1]],
            "env": dict(
                entry.decode().split("=", 1)
                for entry in (proc / "environ").read_bytes().split(b"\0")
                if b"=" in entry
            ),
            "cwd": os.readlink(proc / "cwd"),
        }
    except (FileNotFoundError, ProcessLookupError):
        if not saved.exists():
            raise EnvError("the kube-apiserver is not running") from None
        return dict(json.loads(saved.read_text()))
    if not command["args"]:  # a zombie's
        return dict(json.loads(saved.read_text()))
    saved.write_text(json.dumps(command))
    return command


def _start_detached(command: dict[str, Any], log_file: Path, pid_file: Path) -> Path:
    # Through a shell that exits at once: the server is nobody's child but init's, as kwokctl
    # leaves it, and outlives whoever asked for the restart.
    pid = run(
        ["sh", "-c", f'exec "$@" >>"{log_file}" 2>&1 </dev/null & echo $!', "sh", *command["args"]],
        cwd=Path(command["cwd"]),
        env=command["env"],
    ).strip()
    pid_file.write_text(pid)
    return Path(f"/proc/{pid}")


def _running(proc: Path) -> bool:
    """Whether the process of /proc/PID runs: a zombie no longer does (in a container whose
    first process does not reap orphans, it may stay one)."""
    try:
        return (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def kafka_dir() -> Path:
    return STATE / "kafka"


KAFKA_PORTS = ("broker", "controller", "ssl", "mtls", "sasl_ssl")
KAFKA_USER = "modelserving"
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


# What a broker that is its cluster's one node needs (every internal topic with one replica),
# and what tests expect of it (topics made when first written, no wait for a group's members).
ONE_NODE_SETTINGS = (
    "num.partitions=1",
    "offsets.topic.replication.factor=1",
    "transaction.state.log.replication.factor=1",
    "transaction.state.log.min.isr=1",
    "share.coordinator.state.topic.replication.factor=1",
    "share.coordinator.state.topic.min.isr=1",
    "group.initial.rebalance.delay.ms=0",
    "auto.create.topics.enable=true",
)


def kafka_ports() -> dict[str, int]:
    """The broker's ports by listener, kept for the environment's life (a restart reuses them);
    a state from before a listener existed gets a port for it."""
    path = kafka_dir() / "ports.json"
    ports = json.loads(path.read_text()) if path.exists() else {}
    if any(name not in ports for name in KAFKA_PORTS) or len(set(ports.values())) < len(ports):
        kafka_dir().mkdir(parents=True, exist_ok=True)
        ports = free_ports(KAFKA_PORTS, ports)
        path.write_text(json.dumps(ports))
    return ports


def kafka_client_dir() -> Path:
    return kafka_dir() / "clients"


def kafka_listeners() -> KafkaListeners:
    ports, clients = kafka_ports(), kafka_client_dir()
    return KafkaListeners(
        ssl_bootstrap=f"127.0.0.1:{ports['ssl']}",
        mtls_bootstrap=f"127.0.0.1:{ports['mtls']}",
        sasl_ssl_bootstrap=f"127.0.0.1:{ports['sasl_ssl']}",
        ca_file=str(clients / "ca.crt"),
        client_cert_file=str(clients / "user.crt"),
        client_key_file=str(clients / "user.key"),
        ca_key_file=str(kafka_dir() / "tls" / "ca.key"),
        user=KAFKA_USER,
        password_file=str(clients / "password"),
        client_dir=str(clients),
    )


def _write_private(path: Path, data: bytes) -> None:
    """Write a file only its owner can read (keys, passwords)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def kafka_certificates() -> None:
    """The CA, the broker's key store and the client's certificate, made when missing or near
    their end (kafka_certs.py), and the SASL password, made once."""
    sys.path.insert(0, str(HERE))
    try:
        import kafka_certs
    except ImportError as exc:
        raise EnvError(
            f"the broker's certificates are made with `cryptography` ({exc}): run localenv with "
            "the project's virtualenv (`make env-up`, or .venv/bin/python localenv/localenv.py)"
        ) from None
    finally:
        sys.path.remove(str(HERE))
    listeners, tls = kafka_listeners(), kafka_dir() / "tls"
    ca_file = Path(listeners.ca_file)
    if not (kafka_certs.still_valid(ca_file) and kafka_certs.still_valid(tls / "broker.pem")):
        ca = kafka_certs.make_ca()
        broker = kafka_certs.issue(ca, "localhost", server=True, hosts=("127.0.0.1", "localhost"))
        client = kafka_certs.issue(ca, KAFKA_USER, server=False)
        _write_private(tls / "ca.key", ca.key_pem)
        _write_private(tls / "broker.pem", broker.key_pem + broker.cert_pem)
        _write_private(Path(listeners.client_key_file), client.key_pem)
        _write_private(kafka_client_dir() / "user.pem", client.key_pem + client.cert_pem)
        Path(listeners.client_cert_file).write_bytes(client.cert_pem)
        ca_file.write_bytes(ca.cert_pem)
    password = Path(listeners.password_file)
    if not password.exists():
        _write_private(password, secrets.token_urlsafe(18).encode())


def kafka_password() -> str:
    return Path(kafka_listeners().password_file).read_text().strip()


def kafka_client_properties() -> None:
    """Kafka client properties per secured listener and mechanism, as Kafka's own tools take them
    (--command-config) and `modelserving logs --command-config` does too."""
    listeners, clients = kafka_listeners(), kafka_client_dir()
    trust = ["ssl.truststore.type=PEM", f"ssl.truststore.location={listeners.ca_file}"]
    files = {
        "ssl.properties": [
            f"bootstrap.servers={listeners.ssl_bootstrap}",
            "security.protocol=SSL",
            *trust,
        ],
        # Kafka's PEM key store is one file: the key, then the certificate.
        "mtls.properties": [
            f"bootstrap.servers={listeners.mtls_bootstrap}",
            "security.protocol=SSL",
            *trust,
            "ssl.keystore.type=PEM",
            f"ssl.keystore.location={clients / 'user.pem'}",
        ],
    }
    password = kafka_password()
    for mechanism in SASL_MECHANISMS:
        module = "plain.PlainLoginModule" if mechanism == "PLAIN" else "scram.ScramLoginModule"
        files[f"sasl-{mechanism.lower()}.properties"] = [
            f"bootstrap.servers={listeners.sasl_ssl_bootstrap}",
            "security.protocol=SASL_SSL",
            *trust,
            f"sasl.mechanism={mechanism}",
            f"sasl.jaas.config=org.apache.kafka.common.security.{module} required "
            f'username="{KAFKA_USER}" password="{password}";',
        ]
    for name, lines in files.items():
        _write_private(clients / name, ("\n".join(lines) + "\n").encode())


def kafka_pid(home: Path | None = None) -> int | None:
    """The process id of the broker whose folder is `home` (the shared one's unless told), while
    it runs."""
    pidfile = (home or kafka_dir()) / "kafka.pid"
    if not pidfile.exists():
        return None
    pid = int(pidfile.read_text())
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    return pid


def java_cmd(*args: str) -> list[str]:
    return ["java", "-cp", f"{kafka_libs()}/*", *args]


def kafka_configure() -> Path:
    ports = kafka_ports()
    broker, controller = ports["broker"], ports["controller"]
    config = kafka_dir() / "server.properties"
    data = kafka_dir() / "data"
    tls = kafka_dir() / "tls"
    kafka_certificates()
    listeners = {
        "PLAINTEXT": broker,
        "CONTROLLER": controller,
        "SSL": ports["ssl"],
        "MTLS": ports["mtls"],
        "SASL_SSL": ports["sasl_ssl"],
    }
    advertised = {name: port for name, port in listeners.items() if name != "CONTROLLER"}
    password = kafka_password()
    scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
    config.write_text(
        "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.voters=1@127.0.0.1:{controller}",
                "listeners=" + ",".join(f"{n}://127.0.0.1:{p}" for n, p in listeners.items()),
                "advertised.listeners="
                + ",".join(f"{n}://127.0.0.1:{p}" for n, p in advertised.items()),
                "controller.listener.names=CONTROLLER",
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,"
                "SSL:SSL,MTLS:SSL,SASL_SSL:SASL_SSL",
                "inter.broker.listener.name=PLAINTEXT",
                # Kafka reads PEM itself: the key store is the key and certificate in one file.
                "ssl.keystore.type=PEM",
                f"ssl.keystore.location={tls / 'broker.pem'}",
                "ssl.truststore.type=PEM",
                f"ssl.truststore.location={kafka_listeners().ca_file}",
                "listener.name.mtls.ssl.client.auth=required",
                "sasl.enabled.mechanisms=" + ",".join(SASL_MECHANISMS),
                "listener.name.sasl_ssl.plain.sasl.jaas.config="
                "org.apache.kafka.common.security.plain.PlainLoginModule required "
                f'user_{KAFKA_USER}="{password}";',
                f"listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config={scram}",
                f"listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config={scram}",
                f"log.dirs={data}",
                *ONE_NODE_SETTINGS,
                "",
            ]
        )
    )
    config.chmod(0o600)  # it holds the PLAIN user's password
    kafka_client_properties()
    scram_marker = kafka_dir() / "scram-users"
    if (data / "meta.properties").exists() and not scram_marker.exists():
        # SCRAM users are set when the storage is formatted: a broker's data from before they
        # existed is made again (a test environment's topics only).
        log("formatting Kafka's storage again, to add the SCRAM users")
        shutil.rmtree(data)
    if not (data / "meta.properties").exists():
        cluster_id = kafka_cluster_id()
        users = [
            arg
            for mechanism in SASL_MECHANISMS[1:]
            for arg in ("--add-scram", f"{mechanism}=[name={KAFKA_USER},password={password}]")
        ]
        run(
            java_cmd(
                "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(config), *users
            )
        )
        scram_marker.touch()
    return config


def kafka_start() -> str:
    """Start the broker (or keep the running one); return its bootstrap address."""
    ports = kafka_ports()
    broker = ports["broker"]
    bootstrap = f"127.0.0.1:{broker}"
    if kafka_pid() is not None and port_open(broker):
        if port_open(ports["sasl_ssl"]):
            return bootstrap
        log("the running broker has no secured listeners yet: restarting it with them")
        kafka_stop()
    config = kafka_configure()
    log(f"starting Kafka {KAFKA_VERSION} (KRaft) on {bootstrap}")
    _launch_broker(kafka_dir(), config, [ports[n] for n in ("broker", "ssl", "mtls", "sasl_ssl")])
    return bootstrap


def _launch_broker(home: Path, config: Path, listening: list[int]) -> None:
    """Start the broker of `home` with `config`, and wait until it listens on every port of
    `listening`."""
    logfile = (home / "kafka.log").open("ab")
    proc = subprocess.Popen(
        [
            "java",
            "-Xms256m",
            "-Xmx512m",
            f"-Dlog4j2.configurationFile={HERE / 'kafka' / 'log4j2.properties'}",
            "-cp",
            f"{kafka_libs()}/*",
            "kafka.Kafka",
            str(config),
        ],
        stdout=logfile,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    (home / "kafka.pid").write_text(str(proc.pid))
    deadline = time.monotonic() + 90
    while not all(port_open(port) for port in listening):
        if proc.poll() is not None:
            raise EnvError(f"Kafka exited with code {proc.returncode}; see {home / 'kafka.log'}")
        if time.monotonic() > deadline:
            raise EnvError(f"Kafka did not listen on 127.0.0.1:{listening[0]} in 90 s")
        time.sleep(0.2)


def kafka_cluster_id() -> str:
    """A new KRaft cluster id, as `kafka-storage random-uuid` makes it (a random UUID in URL-safe
    base64 without padding, never one that begins with a dash), without starting a JVM."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def kafka_stop(sig: int = signal.SIGTERM, home: Path | None = None) -> None:
    """Stop the broker (the shared one, or the one whose folder is `home`), keeping its data and
    ports so that a start brings it back as it was."""
    home = home or kafka_dir()
    pid = kafka_pid(home)
    if pid is None:
        return
    os.killpg(pid, sig)
    deadline = time.monotonic() + 60
    while kafka_pid(home) is not None and time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.1)
    if kafka_pid(home) is not None:
        os.killpg(pid, signal.SIGKILL)
    (home / "kafka.pid").unlink(missing_ok=True)


def kafka_signal(sig: int, home: Path | None = None) -> None:
    """Send the running broker a signal: SIGSTOP hangs it (connections are still accepted by
    the kernel, nothing is answered, as with a broker stuck in a long pause), SIGCONT resumes."""
    pid = kafka_pid(home)
    if pid is None:
        raise EnvError("Kafka is not running")
    os.killpg(pid, sig)


def spare_broker_dir(name: str) -> Path:
    return SPARES / f"kafka-{name}"


def spare_broker_start(name: str) -> str:
    """Start (or keep) a broker of a test's own: one node, plaintext, with a folder of its own
    (spare_broker_dir), for tests that stop, kill or hang a broker without taking the shared
    one from the tests running beside them; return its bootstrap address. kafka_stop and
    kafka_signal take its folder."""
    home = spare_broker_dir(name)
    home.mkdir(parents=True, exist_ok=True)
    ports_file = home / "ports.json"
    if not ports_file.exists():
        ports_file.write_text(json.dumps(free_ports(("broker", "controller"))))
    ports = json.loads(ports_file.read_text())
    bootstrap = f"127.0.0.1:{ports['broker']}"
    if kafka_pid(home) is not None and port_open(ports["broker"]):
        return bootstrap
    config, data = home / "server.properties", home / "data"
    config.write_text(
        "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.voters=1@127.0.0.1:{ports['controller']}",
                f"listeners=PLAINTEXT://{bootstrap},CONTROLLER://127.0.0.1:{ports['controller']}",
                f"advertised.listeners=PLAINTEXT://{bootstrap}",
                "controller.listener.names=CONTROLLER",
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                "inter.broker.listener.name=PLAINTEXT",
                f"log.dirs={data}",
                *ONE_NODE_SETTINGS,
                "",
            ]
        )
    )
    if not (data / "meta.properties").exists():
        run(
            java_cmd(
                "kafka.tools.StorageTool", "format", "-t", kafka_cluster_id(), "-c", str(config)
            )
        )
    log(f"starting a broker of its own on {bootstrap} ({name})")
    _launch_broker(home, config, [ports["broker"]])
    return bootstrap


@dataclass(frozen=True)
class JaegerEndpoints:
    """Where a running Jaeger takes spans and answers queries."""

    otlp_http: str  # OTLP/HTTP traces URL (http://127.0.0.1:PORT/v1/traces)
    otlp_grpc: str  # OTLP/gRPC address (127.0.0.1:PORT)
    query_url: str  # the query API's base URL: GET {query_url}/api/traces/<trace id>


def jaeger_dir(name: str) -> Path:
    return SPARES / f"jaeger-{name}"


def jaeger_config(otlp_http: int, otlp_grpc: int, query_http: int, query_grpc: int) -> str:
    """Jaeger v2's config (an OpenTelemetry Collector's): OTLP receivers and the query API on
    the given ports, spans kept in memory, none of the all-in-one's other listeners (its own
    metrics on 8888, health, sampling, zpages), so that several can run side by side."""
    return f"""service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  jaeger_storage:
    backends:
      memory_store:
        memory:
          max_traces: 100000
  jaeger_query:
    storage:
      traces: memory_store
    http:
      endpoint: 127.0.0.1:{query_http}
    grpc:
      endpoint: 127.0.0.1:{query_grpc}
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{otlp_http}
      grpc:
        endpoint: 127.0.0.1:{otlp_grpc}
processors:
  # Spans reach the store within 50 ms of arriving, so that a test asks for them soon.
  batch:
    timeout: 50ms
exporters:
  jaeger_storage_exporter:
    trace_storage: memory_store
"""


def jaeger_start(name: str, ready_s: float = 60.0) -> JaegerEndpoints:
    """Start (or keep) a Jaeger of a test module's own (all in one, in memory) on free ports,
    for the tracing tests; not started by `up`, so other runs never pay for it. Stopped by
    spares_down(name) and `down`."""
    home = jaeger_dir(name)
    home.mkdir(parents=True, exist_ok=True)
    ports_file = home / "ports.json"
    if not ports_file.exists():
        names = ("otlp_http", "otlp_grpc", "query_http", "query_grpc")
        ports_file.write_text(json.dumps(free_ports(names)))
    ports = json.loads(ports_file.read_text())
    endpoints = JaegerEndpoints(
        otlp_http=f"http://127.0.0.1:{ports['otlp_http']}/v1/traces",
        otlp_grpc=f"127.0.0.1:{ports['otlp_grpc']}",
        query_url=f"http://127.0.0.1:{ports['query_http']}",
    )
    pid_file = home / "jaeger.pid"
    listening = [ports["otlp_http"], ports["query_http"]]
    running = pid_file.exists() and _running(Path(f"/proc/{pid_file.read_text()}"))
    if running and all(port_open(port) for port in listening):
        return endpoints
    if not jaeger_cached():
        raise EnvError("Jaeger is not built: run `make env-build`")
    config = home / "config.yaml"
    config.write_text(jaeger_config(**ports))
    command = {
        "args": [str(jaeger_bin() / "jaeger"), "--config", str(config)],
        "env": dict(os.environ),
        "cwd": str(home),
    }
    proc = _start_detached(command, home / "jaeger.log", pid_file)
    deadline = time.monotonic() + ready_s
    while not all(port_open(port) for port in listening):
        if not _running(proc):
            tail = "\n".join((home / "jaeger.log").read_text().splitlines()[-20:])
            raise EnvError(f"Jaeger ({name}) exited at start:\n{tail}")
        if time.monotonic() > deadline:
            raise EnvError(f"Jaeger ({name}) did not listen within {ready_s:.0f} s")
        time.sleep(0.1)
    log(f"Jaeger on {endpoints.otlp_http} (OTLP/HTTP), {endpoints.query_url} (query) ({name})")
    return endpoints


def spares_down(name: str | None = None) -> None:
    """Stop the spare parts (second API servers, brokers of their own, Jaegers) of `name`, or
    all of them, and remove their state."""
    if name is not None:
        homes = [_apiserver_files(name).pid_file.parent, spare_broker_dir(name), jaeger_dir(name)]
    else:
        homes = list(SPARES.iterdir()) if SPARES.exists() else []
    for home in homes:
        kafka_stop(signal.SIGKILL, home)
        for pid_file in (home / "kube-apiserver.pid", home / "jaeger.pid"):
            if pid_file.exists() and _running(proc := Path(f"/proc/{pid_file.read_text()}")):
                os.kill(int(proc.name), signal.SIGKILL)
        shutil.rmtree(home, ignore_errors=True)


def settings_file() -> Path:
    return STATE / "env.json"


def up() -> Settings:
    """Start the environment, or find it up. Safe from several processes at once (a test run's
    workers, its early start): one starts it under a lock while the others wait, then find it
    up."""
    STATE.mkdir(parents=True, exist_ok=True)
    with (STATE / "up.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _up()


# The addresses KWOK gives the pods of a test's node (tests/support/process_node): served by
# this machine, so that a test runs a pod's containers as processes bound at the pod's address.
# Not 127/8: the API server refuses loopback addresses in EndpointSlices, and a Service's
# endpoints are what a test of the serving's network sends to. 198.18.0.0/15 is the range kept
# for benchmarks (RFC 2544), routed nowhere else.
POD_NETWORK = "198.18.0.0/15"


def pod_network_up() -> None:
    """Route POD_NETWORK to this machine itself (a `local` route on lo: any address of it can
    be bound, as 127/8 can). Idempotent; left in place at `down` (another checkout's tests
    may use it; it reaches nothing else)."""
    try:
        run(["ip", "route", "replace", "local", POD_NETWORK, "dev", "lo"])
    except (EnvError, FileNotFoundError) as exc:
        raise EnvError(
            f"cannot route {POD_NETWORK} to this machine (`ip route replace local {POD_NETWORK}"
            f" dev lo` needs CAP_NET_ADMIN): {exc}"
        ) from None


def _up() -> Settings:
    build()
    pod_network_up()
    kubeconfig = cluster_up()
    bootstrap = kafka_start()
    settings = Settings(
        kubeconfig=str(kubeconfig),
        kafka_bootstrap=bootstrap,
        path=os.pathsep.join(str(d) for d in bin_dirs()),
        state_dir=str(STATE),
        cluster_dir=str(CLUSTER_DIR),
        kafka=kafka_listeners(),
    )
    settings_file().write_text(json.dumps(dataclasses.asdict(settings), indent=2))
    (STATE / "env.sh").write_text(settings.shell())
    log(f"up: source {STATE / 'env.sh'} to use it (kubectl, helm, KUBECONFIG, Kafka)")
    return settings


def down() -> None:
    spares_down()
    kafka_stop()
    shutil.rmtree(kafka_dir(), ignore_errors=True)
    cluster_down()
    settings_file().unlink(missing_ok=True)
    (STATE / "env.sh").unlink(missing_ok=True)
    log("down")


def collect_logs(dest: Path) -> None:
    """Copy every part's logs into dest (for a failed test run)."""
    dest.mkdir(parents=True, exist_ok=True)
    cluster_logs = CLUSTER_DIR / "logs"
    if cluster_logs.exists():
        shutil.copytree(cluster_logs, dest / "cluster", dirs_exist_ok=True)
    kafka_log = kafka_dir() / "kafka.log"
    if kafka_log.exists():
        shutil.copy(kafka_log, dest / "kafka.log")
    for spare_log in SPARES.glob("*/*.log"):
        shutil.copy(spare_log, dest / f"{spare_log.parent.name}-{spare_log.name}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="localenv", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("build", help="build and cache every part (no processes started)")
    sub.add_parser("up", help="build if needed, start the control plane and Kafka, write env.sh")
    sub.add_parser("down", help="stop everything and remove its state")
    sub.add_parser("env", help="print the shell settings of the running environment")
    kafka = sub.add_parser("kafka", help="stop or start the broker alone (outage tests)")
    kafka.add_argument("action", choices=["start", "stop", "kill", "pause", "resume"])
    apiserver = sub.add_parser("apiserver", help="restart the kube-apiserver alone")
    apiserver.add_argument("action", choices=["restart", "kill-restart"])
    logs = sub.add_parser("logs", help="copy the parts' logs into a folder")
    logs.add_argument("dest", type=Path)
    jaeger = sub.add_parser(
        "jaeger", help="start a Jaeger of its own (its endpoints printed as JSON), or stop it"
    )
    jaeger.add_argument("action", choices=["start", "stop"])
    jaeger.add_argument("--name", default="jaeger", help="the spare part's name (its state)")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            build()
        elif args.command == "up":
            up()
        elif args.command == "down":
            down()
        elif args.command == "env":
            if not settings_file().exists():
                raise EnvError("the environment is not up: run `make env-up`")
            print((STATE / "env.sh").read_text(), end="")
        elif args.command == "kafka":
            if args.action == "start":
                print(kafka_start())
            elif args.action in ("pause", "resume"):
                kafka_signal(signal.SIGSTOP if args.action == "pause" else signal.SIGCONT)
            else:
                kafka_stop(signal.SIGKILL if args.action == "kill" else signal.SIGTERM)
        elif args.command == "apiserver":
            sig = signal.SIGKILL if args.action == "kill-restart" else signal.SIGTERM
            print(f"the kube-apiserver was away {kube_apiserver_restart(sig):.1f} s")
        elif args.command == "logs":
            collect_logs(args.dest)
        elif args.command == "jaeger":
            if args.action == "start":
                print(json.dumps(dataclasses.asdict(jaeger_start(args.name))))
            else:
                spares_down(args.name)
    except EnvError as exc:
        log(f"error: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
