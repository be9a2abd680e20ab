#!/usr/bin/env python3
"""The local environment of real parts that the tests and the demo run against.

A real Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, built from source through the Go module proxy, with KWOK
making nodes and Pods Ready), a real Kafka broker (KRaft, jars from Maven
Central) and the real helm and kubectl binaries. Builds are cached outside the
repo, keyed by version; `up` starts the parts and writes `env.sh`, which a shell
can source, and `env.json`; `down` stops them. Standard library only, so it
runs before the project's virtualenv exists.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

KUBERNETES_VERSION = "v1.36.3"
ETCD_VERSION = "v3.6.16"
KWOK_VERSION = "v0.8.0"
HELM_VERSION = "v3.22.0"
KAFKA_VERSION = "4.3.1"
LOG4J_VERSION = "2.25.3"
SLF4J_VERSION = "2.0.17"

NODE_COUNT = 2
HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CACHE = Path(os.environ.get("MODELSERVING_CACHE", Path.home() / ".cache" / "modelserving"))
STATE = Path(os.environ.get("MODELSERVING_LOCALENV", REPO / ".localenv"))
# One cluster per state folder, so that two checkouts (a developer's and CI's
# clean clone) never take over each other's cluster.
CLUSTER_NAME = "modelserving-" + hashlib.sha256(str(STATE).encode()).hexdigest()[:8]

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
    (`building kube-apiserver (6/9)`), a heartbeat with the time so far every `heartbeat_s`
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
        """`(6/9)`: where the step is among those this build makes."""
        return f"({self.to_build.index(name) + 1}/{len(self.to_build)})"

    def plan(self) -> str:
        """What the build will do, said before it starts."""
        building = ", ".join(self.to_build)
        cached = f"; cached: {', '.join(s for s in BUILD_STEPS if s in self.cached)}"
        return (
            f"building {building} into {CACHE}{cached if self.cached else ''} "
            "(about 8 minutes on 2 cores with empty Go caches; later runs use this cache)"
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
            "mvn", "-q", "-B", "-f", str(HERE / "kafka" / "pom.xml"),
            f"-Dkafka.version={KAFKA_VERSION}", f"-Dlog4j.version={LOG4J_VERSION}",
            f"-Dslf4j.version={SLF4J_VERSION}",
            "dependency:copy-dependencies", f"-DoutputDirectory={tmp}", "-DincludeScope=runtime",
        ]
    )  # fmt: skip
    tmp.rename(out)


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
    build_kubernetes(progress)
    for line in progress.summary(time.monotonic() - started):
        log(line)


# --------------------------------------------------------------------------- running


@dataclass(frozen=True)
class Settings:
    """Where the running environment can be reached; written to env.sh and env.json."""

    kubeconfig: str
    kafka_bootstrap: str
    path: str
    state_dir: str

    def shell(self) -> str:
        return (
            f"export KUBECONFIG={self.kubeconfig}\n"
            f"export MODELSERVING_KAFKA_BOOTSTRAP={self.kafka_bootstrap}\n"
            f"export PATH={self.path}:$PATH\n"
        )


def free_port() -> int:
    """A free port below Linux's ephemeral range (32768-60999): a port kept for a restart
    (Kafka's, across an outage test) must not be taken meanwhile by some outgoing connection."""
    for _ in range(200):
        port = random.randrange(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise EnvError("found no free port between 20000 and 32000")


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


def cluster_up() -> Path:
    kubeconfig = cluster_kubeconfig()
    if kubeconfig.exists():
        try:
            kubectl(kubeconfig, "get", "--raw", "/readyz")
            return kubeconfig
        except EnvError:
            log("the recorded cluster does not answer; recreating it")
    with contextlib.suppress(EnvError):
        kwokctl("delete", "cluster", "--name", CLUSTER_NAME)
    log(f"starting the control plane (Kubernetes {KUBERNETES_VERSION}, KWOK {KWOK_VERSION})")
    kwokctl(
        "create", "cluster", "--name", CLUSTER_NAME, "--runtime", "binary",
        "--kube-authorization",
        # The components' default client limits (20 requests/s for the controller-manager)
        # make a thousand Deployments take minutes to become available, whatever the operator does.
        "--disable-qps-limits",
        # The API server's default Service range is a /24: 254 Services, fewer than the
        # servings a scale test makes (each has a Service).
        "--extra-args", "kube-apiserver=service-cluster-ip-range=10.96.0.0/16",
        "--kube-apiserver-binary", str(kube_bin() / "kube-apiserver"),
        "--kube-controller-manager-binary", str(kube_bin() / "kube-controller-manager"),
        "--kube-scheduler-binary", str(kube_bin() / "kube-scheduler"),
        "--etcd-binary", str(etcd_bin() / "etcd"),
        "--kwok-controller-binary", str(kwok_bin() / "kwok"),
        "--wait", "3m",
    )  # fmt: skip
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


def kafka_dir() -> Path:
    return STATE / "kafka"


def kafka_ports() -> tuple[int, int]:
    ports = kafka_dir() / "ports.json"
    if ports.exists():
        data = json.loads(ports.read_text())
        return data["broker"], data["controller"]
    kafka_dir().mkdir(parents=True, exist_ok=True)
    broker, controller = free_port(), free_port()
    ports.write_text(json.dumps({"broker": broker, "controller": controller}))
    return broker, controller


def kafka_pid() -> int | None:
    pidfile = kafka_dir() / "kafka.pid"
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
    broker, controller = kafka_ports()
    config = kafka_dir() / "server.properties"
    data = kafka_dir() / "data"
    config.write_text(
        "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.voters=1@127.0.0.1:{controller}",
                f"listeners=PLAINTEXT://127.0.0.1:{broker},CONTROLLER://127.0.0.1:{controller}",
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{broker}",
                "controller.listener.names=CONTROLLER",
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                "inter.broker.listener.name=PLAINTEXT",
                f"log.dirs={data}",
                "num.partitions=1",
                "offsets.topic.replication.factor=1",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "share.coordinator.state.topic.replication.factor=1",
                "share.coordinator.state.topic.min.isr=1",
                "group.initial.rebalance.delay.ms=0",
                "auto.create.topics.enable=true",
                "",
            ]
        )
    )
    if not (data / "meta.properties").exists():
        cluster_id = (
            run(java_cmd("kafka.tools.StorageTool", "random-uuid")).strip().splitlines()[-1]
        )
        run(java_cmd("kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(config)))
    return config


def kafka_start() -> str:
    """Start the broker (or keep the running one); return its bootstrap address."""
    broker, _ = kafka_ports()
    bootstrap = f"127.0.0.1:{broker}"
    if kafka_pid() is not None and port_open(broker):
        return bootstrap
    config = kafka_configure()
    log(f"starting Kafka {KAFKA_VERSION} (KRaft) on {bootstrap}")
    logfile = (kafka_dir() / "kafka.log").open("ab")
    proc = subprocess.Popen(
        [
            "java", "-Xms256m", "-Xmx512m",
            f"-Dlog4j2.configurationFile={HERE / 'kafka' / 'log4j2.properties'}",
            "-cp", f"{kafka_libs()}/*", "kafka.Kafka", str(config),
        ],
        stdout=logfile, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    (kafka_dir() / "kafka.pid").write_text(str(proc.pid))
    deadline = time.monotonic() + 90
    while not port_open(broker):
        if proc.poll() is not None:
            raise EnvError(
                f"Kafka exited with code {proc.returncode}; see {kafka_dir() / 'kafka.log'}"
            )
        if time.monotonic() > deadline:
            raise EnvError(f"Kafka did not listen on {bootstrap} in 90 s")
        time.sleep(0.2)
    return bootstrap


def kafka_stop(sig: int = signal.SIGTERM) -> None:
    """Stop the broker, keeping its data and ports so that a start brings it back as it was."""
    pid = kafka_pid()
    if pid is None:
        return
    os.killpg(pid, sig)
    deadline = time.monotonic() + 60
    while kafka_pid() is not None and time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.1)
    if kafka_pid() is not None:
        os.killpg(pid, signal.SIGKILL)
    (kafka_dir() / "kafka.pid").unlink(missing_ok=True)


def kafka_signal(sig: int) -> None:
    """Send the running broker a signal: SIGSTOP hangs it (connections are still accepted by
    the kernel, nothing is answered, as with a broker stuck in a long pause), SIGCONT resumes."""
    pid = kafka_pid()
    if pid is None:
        raise EnvError("Kafka is not running")
    os.killpg(pid, sig)


def settings_file() -> Path:
    return STATE / "env.json"


def up() -> Settings:
    build()
    STATE.mkdir(parents=True, exist_ok=True)
    kubeconfig = cluster_up()
    bootstrap = kafka_start()
    settings = Settings(
        kubeconfig=str(kubeconfig),
        kafka_bootstrap=bootstrap,
        path=os.pathsep.join(str(d) for d in bin_dirs()),
        state_dir=str(STATE),
    )
    settings_file().write_text(json.dumps(settings.__dict__, indent=2))
    (STATE / "env.sh").write_text(settings.shell())
    log(f"up: source {STATE / 'env.sh'} to use it (kubectl, helm, KUBECONFIG, Kafka)")
    return settings


def down() -> None:
    kafka_stop()
    shutil.rmtree(kafka_dir(), ignore_errors=True)
    cluster_down()
    settings_file().unlink(missing_ok=True)
    (STATE / "env.sh").unlink(missing_ok=True)
    log("down")


def collect_logs(dest: Path) -> None:
    """Copy every part's logs into dest (for a failed test run)."""
    dest.mkdir(parents=True, exist_ok=True)
    cluster_logs = Path.home() / ".kwok" / "clusters" / CLUSTER_NAME / "logs"
    if cluster_logs.exists():
        shutil.copytree(cluster_logs, dest / "cluster", dirs_exist_ok=True)
    kafka_log = kafka_dir() / "kafka.log"
    if kafka_log.exists():
        shutil.copy(kafka_log, dest / "kafka.log")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="localenv", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("build", help="build and cache every part (no processes started)")
    sub.add_parser("up", help="build if needed, start the control plane and Kafka, write env.sh")
    sub.add_parser("down", help="stop everything and remove its state")
    sub.add_parser("env", help="print the shell settings of the running environment")
    kafka = sub.add_parser("kafka", help="stop or start the broker alone (outage tests)")
    kafka.add_argument("action", choices=["start", "stop", "kill", "pause", "resume"])
    logs = sub.add_parser("logs", help="copy the parts' logs into a folder")
    logs.add_argument("dest", type=Path)
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
        elif args.command == "logs":
            collect_logs(args.dest)
    except EnvError as exc:
        log(f"error: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
