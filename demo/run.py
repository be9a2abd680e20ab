"""The demo: the whole system doing its job on this machine, step by step.

It brings up the local environment of real parts (a Kubernetes control plane
with KWOK, a Kafka broker), installs the CRDs, starts the operator, applies
examples/half_plus_two.yaml, waits for the serving to be Ready, then runs the
serving pod's two containers as local processes (KWOK's Pods run no code): the
TF Serving stand-in of tests/ (or the real `tensorflow_model_server` when it is
on PATH) and the real sidecar, configured from what the operator rendered. It
sends the seed's request with the demo key and without, and reads the
inference log back from Kafka with the project's own reader.

    python demo/run.py [--keep]      # make demo / make demo KEEP=1
    python demo/run.py --down        # make demo-down
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from modelserving.api import LABEL_INSTANCE
from modelserving.inferencelog.query import InferenceLogQuery
from modelserving.inferencelog.reader import read_inference_log
from modelserving.inferencelog.record import HEADER_REQUEST_ID

REPO = Path(__file__).resolve().parent.parent
LOCALENV = REPO / "localenv" / "localenv.py"
STATE = Path(os.environ.get("MODELSERVING_LOCALENV", REPO / ".localenv"))
DEMO_DIR = STATE / "demo"
EXAMPLE = REPO / "examples" / "half_plus_two.yaml"
NAMESPACE = "demo"
SERVING = "half-plus-two"
OPERATOR_NAMESPACE = "modelserving-system"
# Published in examples/half_plus_two.yaml beside its hash: a demo key, no secret.
DEMO_KEY = "demo-key-half-plus-two"
# The seed's request shape: TF Serving JSON with a signature name and instances.
SEED_REQUEST = {"signature_name": "serving_default", "instances": [1.0, 2.0, 5.0]}
STEPS = 9


class DemoError(RuntimeError):
    """A step failed; the message says which and where to look."""


def step(number: int, text: str) -> None:
    print(f"\n[{number}/{STEPS}] {text}", flush=True)


def say(text: str) -> None:
    print(f"      {text}", flush=True)


def wait(predicate, timeout: float, what: str, interval: float = 0.25):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise DemoError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


class Cluster:
    """kubectl against the local environment, with its settings."""

    def __init__(self, settings: dict[str, str]) -> None:
        self.env = {
            **os.environ,
            "KUBECONFIG": settings["kubeconfig"],
            "PATH": f"{settings['path']}{os.pathsep}{os.environ['PATH']}",
        }
        self.bootstrap = settings["kafka_bootstrap"]

    def kubectl(self, *args: str, check: bool = True) -> str:
        proc = subprocess.run(["kubectl", *args], env=self.env, capture_output=True, text=True)
        if check and proc.returncode != 0:
            raise DemoError(f"kubectl {' '.join(args)} failed:\n{proc.stderr.strip()}")
        return proc.stdout

    def ok(self, *args: str) -> bool:
        return subprocess.run(["kubectl", *args], env=self.env, capture_output=True).returncode == 0

    def get(self, *args: str) -> dict[str, Any] | None:
        out = self.kubectl("get", *args, "-o", "json", check=False)
        return json.loads(out) if out else None


def environment_up() -> dict[str, str]:
    """Start the local environment, showing what it says as it goes: a first run builds its
    parts for minutes, and says which part and how far along."""
    proc = subprocess.Popen(
        [sys.executable, str(LOCALENV), "up"],
        stderr=subprocess.STDOUT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    said: list[str] = []
    for line in proc.stdout:
        said.append(line)
        say(line.rstrip("\n"))
    if proc.wait() != 0:
        raise DemoError(f"the local environment could not start:\n{''.join(said)[-3000:]}")
    return json.loads((STATE / "env.json").read_text())


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class Processes:
    """The processes the demo starts, recorded so that `--down` can stop them later."""

    def __init__(self) -> None:
        self.pidfile = DEMO_DIR / "pids.json"
        self.pids: dict[str, int] = {}

    def start(self, name: str, cmd: list[str], env: dict[str, str] | None = None) -> Path:
        log = DEMO_DIR / f"{name}.log"
        handle = log.open("wb")
        proc = subprocess.Popen(
            cmd,
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        self.pids[name] = proc.pid
        self.pidfile.write_text(json.dumps(self.pids))
        return log

    def alive(self, name: str) -> bool:
        try:
            os.kill(self.pids[name], 0)
        except (ProcessLookupError, KeyError):
            return False
        # A zombie is not alive: reap it if it has exited.
        try:
            pid, _ = os.waitpid(self.pids[name], os.WNOHANG)
        except ChildProcessError:
            return True
        return pid == 0

    def stop_all(self) -> None:
        pids = json.loads(self.pidfile.read_text()) if self.pidfile.exists() else self.pids
        for pid in pids.values():
            try:
                os.killpg(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                    if os.waitpid(pid, os.WNOHANG)[0] == pid:
                        break
                except (ProcessLookupError, ChildProcessError):
                    break
                time.sleep(0.1)
            else:
                os.killpg(pid, signal.SIGKILL)
        self.pidfile.unlink(missing_ok=True)


def http(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None):
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()
    except (urllib.error.URLError, ConnectionError):
        return None, {}, b""


def serving_ready(cluster: Cluster) -> dict[str, Any] | None:
    serving = cluster.get("modelserving", SERVING, "-n", NAMESPACE)
    conditions = (serving or {}).get("status", {}).get("conditions", [])
    ready = any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
    return serving if ready else None


def materialize_pod(cluster: Cluster, deployment: dict[str, Any], root: Path) -> dict[str, Path]:
    """Write the sidecar's volumes as the kubelet would, under root; return mountPath -> folder."""
    pod = deployment["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    sidecar = next(c for c in pod["containers"] if c["name"] == "sidecar")
    mounts: dict[str, Path] = {}
    for mount in sidecar.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        local = root / mount["mountPath"].lstrip("/")
        if "configMap" in volume or "secret" in volume:
            kind, name = (
                ("configmap", volume["configMap"]["name"])
                if "configMap" in volume
                else ("secret", volume["secret"]["secretName"])
            )
            obj = cluster.get(kind, name, "-n", NAMESPACE) or {}
            data = obj.get("data", {})
            if kind == "secret":
                import base64

                data = {k: base64.b64decode(v).decode() for k, v in data.items()}
            if "subPath" in mount:
                local.parent.mkdir(parents=True, exist_ok=True)
                local.write_text(data[mount["subPath"]])
            else:
                local.mkdir(parents=True, exist_ok=True)
                for key, value in data.items():
                    (local / key).write_text(value)
        else:  # emptyDir or a claim: a fresh folder
            local.mkdir(parents=True, exist_ok=True)
        mounts[mount["mountPath"]] = local
    return mounts


def localize(text: str, mounts: dict[str, Path]) -> str:
    """The rendered config with each mount path replaced by the folder standing for it."""
    # One pass, longest path first, whole path segments only: a mount at /tmp must not
    # rewrite what another mount's replacement put there.
    paths = sorted(mounts, key=len, reverse=True)
    pattern = re.compile(r"(?<![\w/.-])(" + "|".join(map(re.escape, paths)) + r")(?=/|\s|$)", re.M)
    return pattern.sub(lambda m: str(mounts[m.group(1)]), text)


async def read_log(topic: str, bootstrap: str, request_id: str, timeout: float) -> list[dict]:
    """The records of one request, read with the project's reader (waiting for them to land)."""
    deadline = time.monotonic() + timeout
    while True:
        records = [
            r.to_json_dict()
            async for r in read_inference_log(
                topic,
                bootstrap,
                InferenceLogQuery(from_beginning=True, where={HEADER_REQUEST_ID: request_id}),
            )
        ]
        if records or time.monotonic() > deadline:
            return records
        await asyncio.sleep(0.5)


def run_demo(keep: bool) -> None:
    started = time.monotonic()
    was_up = (STATE / "env.json").exists()
    step(1, "Local environment of real parts: Kubernetes control plane (KWOK) and Kafka")
    settings = environment_up()
    cluster = Cluster(settings)
    say(f"kube-apiserver up; Kafka at {cluster.bootstrap}")
    for port in (8080, 8500, 8501):
        if not port_free(port):
            raise DemoError(
                f"port {port} is in use: is a demo running? stop it with `make demo-down`"
            )
    shutil.rmtree(DEMO_DIR, ignore_errors=True)
    DEMO_DIR.mkdir(parents=True)
    processes = Processes()
    try:
        step(2, "Install the CRDs and start the operator")
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
        cluster.kubectl(
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/modelservings.modelserving.io",
        )
        # Right after a CRD is established its list can still answer 429 for a moment.
        wait(lambda: cluster.ok("get", "modelservings", "-A"), 30, "the ModelServing API")
        # The namespaces first: an operator watching one that does not exist yet learns of it
        # only from its watch of namespaces, which an API server under load can hold back.
        for namespace in (OPERATOR_NAMESPACE, NAMESPACE):
            if cluster.get("namespace", namespace) is None:
                cluster.kubectl("create", "namespace", namespace)
        operator_log = processes.start(
            "operator",
            [
                sys.executable,
                "-m",
                "modelserving.cli",
                "operator",
                "--standalone",
                "--namespace",
                NAMESPACE,
                "--operator-namespace",
                OPERATOR_NAMESPACE,
                "--kafka-bootstrap-servers",
                cluster.bootstrap,
            ],
            env=cluster.env,
        )
        say(f"modelserving operator watching namespace {NAMESPACE} (log: {operator_log})")

        step(3, f"Apply {EXAMPLE.relative_to(REPO)}: a Secret with the demo key, a ModelServing")
        # A namespace left by an earlier demo may still be terminating.
        wait(
            lambda: (
                cluster.get("namespace", NAMESPACE) is None
                or not cluster.get("namespace", NAMESPACE)["metadata"].get("deletionTimestamp")
            ),
            120,
            f"namespace {NAMESPACE} of an earlier demo to go",
        )
        print(cluster.kubectl("apply", "-f", str(EXAMPLE)), end="")

        step(4, "Wait until the serving is Ready")
        t0 = time.monotonic()
        serving = wait(lambda: serving_ready(cluster), 120, "the serving to be Ready")
        say(f"Ready in {time.monotonic() - t0:.1f} s; modelId {serving['status'].get('modelId')}")
        print(cluster.kubectl("get", "modelservings", "-n", NAMESPACE))
        children = "deployment,service,configmap,networkpolicy,pods"
        selector = f"{LABEL_INSTANCE}={SERVING}"
        print(cluster.kubectl("get", children, "-n", NAMESPACE, "-l", selector))

        step(5, "Run the pod's two containers here, from what the operator rendered")
        deployment = cluster.get("deployment", SERVING, "-n", NAMESPACE)
        pod = deployment["spec"]["template"]["spec"]
        sidecar = next(c for c in pod["containers"] if c["name"] == "sidecar")
        tfserving = next(c for c in pod["containers"] if c["name"] == "tfserving")
        mounts = materialize_pod(cluster, deployment, DEMO_DIR / "pod")
        config_path = sidecar["command"][sidecar["command"].index("--config") + 1]
        local_config = mounts[config_path]
        rendered = yaml.safe_load(localize(local_config.read_text(), mounts))
        # The pod's address is this machine's loopback: the sidecar listens there, not on every
        # address (the tests' pods listen on the sidecar's port at addresses of their own).
        rendered["listen"]["host"] = "127.0.0.1"
        local_config.write_text(yaml.safe_dump(rendered, sort_keys=False))
        rest_port = next(p["containerPort"] for p in tfserving["ports"] if p["name"] == "tfs-rest")
        grpc_port = next(p["containerPort"] for p in tfserving["ports"] if p["name"] == "tfs-grpc")
        model = rendered["model"]["name"]
        if shutil.which("tensorflow_model_server"):
            # --port: TF Serving's gRPC port, out of the way of the sidecar's (8500).
            tfs_cmd = [
                "tensorflow_model_server",
                f"--port={grpc_port}",
                f"--rest_api_port={rest_port}",
                f"--model_name={model}",
                "--model_base_path=" + serving["spec"]["model"]["basePath"],
            ]
            say("TF Serving: the real tensorflow_model_server")
        else:
            # Its REST and gRPC APIs, on TF Serving's ports in the pod.
            tfs_cmd = [
                sys.executable,
                "-m",
                "tests.support.tfserving_standin_grpc",
                "--port",
                str(rest_port),
                "--grpc-port",
                str(grpc_port),
                "--model",
                model,
            ]
            say("TF Serving: the stand-in of tests/ (no registry ships tensorflow_model_server)")
        processes.start("tfserving", tfs_cmd, env={**os.environ, "PYTHONPATH": str(REPO)})
        command = [sys.executable, "-m", "modelserving.cli", *sidecar["command"][1:]]
        command[command.index("--config") + 1] = str(local_config)
        say(f"sidecar: {' '.join(sidecar['command'])}  (mounts under {DEMO_DIR / 'pod'})")
        sidecar_log = processes.start(
            "sidecar", command, env={**os.environ, "POD_NAME": f"{SERVING}-local"}
        )
        port = rendered["listen"]["port"]
        base = f"http://127.0.0.1:{port}"

        def ready():
            if not processes.alive("sidecar"):
                raise DemoError(f"the sidecar exited; see {sidecar_log}")
            return http("GET", f"{base}/readyz")[0] == 200

        wait(ready, 60, "the sidecar's /readyz")
        say(f"sidecar ready on {base}")

        step(6, "A cluster user sends the seed's request, with the demo key")
        project = serving["spec"].get("projectId", NAMESPACE)
        url = f"{base}/hopsworks-api/api/project/{project}/models/{model}:predict"
        body = json.dumps(SEED_REQUEST).encode()
        with_key = {"Authorization": f"ApiKey {DEMO_KEY}", "Content-Type": "application/json"}
        status, headers, answer = http("POST", url, body, with_key)
        say(f"POST {url}")
        say(f"request:  {body.decode()}")
        say(f"answer:   {status} {answer.decode()}  (X-Request-Id {headers.get('X-Request-Id')})")
        if status != 200:
            raise DemoError(f"the prediction failed with {status}; see {sidecar_log}")
        request_id = headers["X-Request-Id"]
        grpc_address = f"127.0.0.1:{rendered['grpc']['port']}"
        outputs, grpc_id = grpc_predict(grpc_address, model, SEED_REQUEST["instances"])
        say(
            f"the same over gRPC ({grpc_address}, PredictionService/Predict, x = "
            f"{SEED_REQUEST['instances']}):"
        )
        say(f"answer:   OK y = {outputs}  (x-request-id {grpc_id})")

        step(7, "The same request without a credential")
        status, headers, answer = http("POST", url, body, {"Content-Type": "application/json"})
        challenge = headers.get("WWW-Authenticate")
        say(f"answer:   {status} {answer.decode()}  (WWW-Authenticate: {challenge})")

        step(8, "A data team reads the inference log from Kafka (Avro, decoded)")
        topic = rendered["logging"]["topic"]
        records = asyncio.run(read_log(topic, cluster.bootstrap, request_id, timeout=60))
        if not records:
            raise DemoError(f"no record reached topic {topic}; see {sidecar_log}")
        for record in records:
            print(json.dumps(record, indent=2))
        say(f"the record of request {request_id} on topic {topic}, with its Kafka key and headers;")
        say("the request without a key was refused before TF Serving and is not logged")

        step(9, f"Done in {time.monotonic() - started:.0f} s. Try it yourself:")
        env_sh = STATE / "env.sh"
        lines = [
            f"source {env_sh}",
            f"kubectl -n {NAMESPACE} get modelservings",
            f"curl -s -H 'Authorization: ApiKey {DEMO_KEY}' -d '{json.dumps(SEED_REQUEST)}' {url}",
            f"curl -s {base}/metrics | grep modelserving_",
            f".venv/bin/modelserving logs {topic} --bootstrap-servers {cluster.bootstrap} "
            "--from-beginning",
            "make demo-down      # stop the demo and the local environment",
        ]
        if not keep:
            lines = ["make demo KEEP=1   # to leave it all running and try these:", *lines]
        for line in lines:
            say(line)
    except BaseException:
        for name in ("operator", "sidecar", "tfserving"):
            log = DEMO_DIR / f"{name}.log"
            if log.exists():
                tail = log.read_text(errors="replace").splitlines()[-15:]
                print(f"\n--- last lines of {name}.log ---\n" + "\n".join(tail), file=sys.stderr)
        keep = False
        raise
    finally:
        if not keep:
            processes.stop_all()
            cluster.kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)
            if not was_up:
                subprocess.run([sys.executable, str(LOCALENV), "down"], check=False)


def grpc_predict(address: str, model: str, x: list[float]) -> tuple[list[float], str]:
    """README's gRPC example, with this project's copy of TF Serving's messages in place of
    TensorFlow's: the outputs y and the call's request id."""
    import grpc

    from modelserving.tfserving import serving_apis_pb2, types_pb2
    from modelserving.tfserving.serving_apis_pb2_grpc import PredictionServiceStub

    request = serving_apis_pb2.PredictRequest()
    request.model_spec.name = model
    tensor = request.inputs["x"]
    tensor.dtype = types_pb2.DT_FLOAT
    tensor.tensor_shape.dim.add().size = len(x)
    tensor.float_val.extend(x)
    with grpc.insecure_channel(address) as channel:
        try:
            # wait_for_ready: the sidecar opens its gRPC port just after the REST one.
            answer, call = PredictionServiceStub(channel).Predict.with_call(
                request,
                metadata=[("authorization", f"ApiKey {DEMO_KEY}")],
                timeout=30,
                wait_for_ready=True,
            )
        except grpc.RpcError as exc:
            raise DemoError(
                f"the gRPC Predict failed: {exc.code().name} {exc.details()}; "
                f"see {DEMO_DIR / 'sidecar.log'}"
            ) from None
    request_id = dict(call.initial_metadata())["x-request-id"]
    return list(answer.outputs["y"].float_val), request_id


def down() -> None:
    Processes().stop_all()
    if (STATE / "env.json").exists():
        cluster = Cluster(json.loads((STATE / "env.json").read_text()))
        cluster.kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)
    subprocess.run([sys.executable, str(LOCALENV), "down"], check=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true", help="leave everything running afterwards")
    parser.add_argument("--down", action="store_true", help="stop a kept demo and the environment")
    args = parser.parse_args()
    try:
        down() if args.down else run_demo(args.keep)
    except DemoError as exc:
        print(f"\ndemo failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
