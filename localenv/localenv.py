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
import time
from dataclasses import dataclass
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


def build_kubernetes() -> None:
    out = kube_bin()
    if all((out / name).exists() for name in KUBE_COMMANDS):
        return
    log(f"building Kubernetes {KUBERNETES_VERSION} (about 4 minutes with empty Go caches)")
    work = CACHE / f"kubernetes-{KUBERNETES_VERSION}" / "src"
    write_wrapper_module(
        work,
        "modelserving.local/kubernetes",
        f"k8s.io/kubernetes {KUBERNETES_VERSION}",
        [f"k8s.io/kubernetes/cmd/{name}" for name in KUBE_COMMANDS],
    )
    info = json.loads(
        run(["go", "mod", "download", "-json", f"k8s.io/kubernetes@{KUBERNETES_VERSION}"], work)
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
    run(
        ["go", "build", "-ldflags", ldflags, "-o", str(tmp) + "/"]
        + [f"k8s.io/kubernetes/cmd/{name}" for name in KUBE_COMMANDS],
        work,
        go_env(),
    )
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


def build_etcd() -> None:
    out = etcd_bin()
    if (out / "etcd").exists():
        return
    log(f"building etcd {ETCD_VERSION}")
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


def go_install(out: Path, packages: list[str], names: list[str], ldflags: str = "") -> None:
    if all((out / name).exists() for name in names):
        return
    log(f"installing {' '.join(packages)}")
    out.mkdir(parents=True, exist_ok=True)
    run(["go", "install", "-ldflags", f"-s -w {ldflags}", *packages], CACHE, go_env(out))


def build_kafka() -> None:
    out = kafka_libs()
    if out.exists() and any(out.glob("kafka_2.13-*.jar")):
        return
    log(f"fetching Kafka {KAFKA_VERSION} jars from Maven Central")
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


def build() -> None:
    check_tools()
    CACHE.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    build_kafka()
    build_etcd()
    go_install(
        kwok_bin(),
        [
            f"sigs.k8s.io/kwok/cmd/kwok@{KWOK_VERSION}",
            f"sigs.k8s.io/kwok/cmd/kwokctl@{KWOK_VERSION}",
        ],
        ["kwok", "kwokctl"],
    )
    go_install(
        helm_bin(),
        [f"helm.sh/helm/v3/cmd/helm@{HELM_VERSION}"],
        ["helm"],
        # helm prints its version from this variable; unset it says "v3.22".
        f"-X helm.sh/helm/v3/internal/version.version={HELM_VERSION}",
    )
    build_kubernetes()
    log(f"builds ready in {CACHE} ({time.monotonic() - started:.0f} s)")


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
        # One controller-manager and one scheduler, that must outlive an API server restart
        # (kube_apiserver_restart): with leader election they exit once their lease cannot be
        # renewed for 10 s, and here nothing would start them again.
        "--extra-args", "kube-controller-manager=leader-elect=false",
        "--extra-args", "kube-scheduler=leader-elect=false",
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


def kube_apiserver_restart(sig: int = signal.SIGKILL, down_seconds: float = 0.0) -> float:
    """Stop the cluster's kube-apiserver alone (etcd and the controllers keep running), by
    SIGKILL as in a crash unless told, and start it again with the same command line after
    `down_seconds` (an outage longer than a restart, when asked for); return
    the seconds it was away, until it was ready and authorizing requests again. For tests of
    the operator across an API server restart. (SIGTERM drains: the server goes on answering
    for a minute or more while it shuts down.)"""
    cluster = Path.home() / ".kwok" / "clusters" / CLUSTER_NAME
    pid_file = cluster / "pids" / "kube-apiserver.pid"
    proc = Path(f"/proc/{pid_file.read_text().strip()}")
    command = _apiserver_command(proc)
    manager = Path(
        f"/proc/{(cluster / 'pids' / 'kube-controller-manager.pid').read_text().strip()}"
    )
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        if b"--leader-elect=false" not in (manager / "cmdline").read_bytes():
            raise EnvError(
                "this cluster's controller-manager would exit while the API server is away "
                "(it was made before leader election was turned off): `make env-down env-up`"
            )
    port = int(next(a for a in command["args"] if a.startswith("--secure-port=")).split("=")[1])
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
    log_file = cluster / "logs" / "kube-apiserver.log"
    proc = _start_detached(command, log_file, pid_file)
    log(f"kube-apiserver stopped and started again ({time.monotonic() - stopped:.1f} s)")
    deadline = time.monotonic() + 120
    # Ready, and authorizing again: /readyz passes before the RBAC caches are filled, while
    # every request but an admin's is still refused (the discovery roles are granted to all).
    probe = ("auth", "can-i", "get", "/version", "--as=probe", "--as-group=system:authenticated")
    while True:
        if not _running(proc):  # it could not listen yet: try again
            proc = _start_detached(command, log_file, pid_file)
        try:
            kubectl(cluster_kubeconfig(), "get", "--raw", "/readyz")
            if kubectl(cluster_kubeconfig(), *probe).strip() == "yes":
                return time.monotonic() - stopped
        except EnvError:
            pass
        if time.monotonic() > deadline:
            raise EnvError("the kube-apiserver did not authorize requests 120 s after a restart")
        time.sleep(0.2)


def _apiserver_command(proc: Path) -> dict:
    """The running kube-apiserver's command line, environment and folder, kept in the state
    folder so that a server that a restart left down can still be started."""
    saved = STATE / "kube-apiserver.json"
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


def _start_detached(command: dict, log_file: Path, pid_file: Path) -> Path:
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
    apiserver = sub.add_parser("apiserver", help="restart the kube-apiserver alone")
    apiserver.add_argument("action", choices=["restart", "kill-restart"])
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
        elif args.command == "apiserver":
            sig = signal.SIGKILL if args.action == "kill-restart" else signal.SIGTERM
            print(f"the kube-apiserver was away {kube_apiserver_restart(sig):.1f} s")
        elif args.command == "logs":
            collect_logs(args.dest)
    except EnvError as exc:
        log(f"error: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
