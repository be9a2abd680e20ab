"""The inference log on a secured Kafka, end to end on real parts: the local broker's TLS,
mutual-TLS and SASL_SSL listeners (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512), the real operator
creating the topic over them, the real sidecar process producing through them with the Secrets
the operator mounts (projected here as the kubelet does), and `modelserving logs` reading back
with a Kafka client properties file. The Secrets are laid out exactly as Strimzi's (the cluster
CA's, a TLS KafkaUser's, a SCRAM KafkaUser's) and used without renaming.

Failures say what is wrong and keep the records: a wrong password and an untrusted CA turn
LoggingReady False with their reason, nothing secret reaches a log, an Event or the status,
predictions keep answering, and once the Secret is fixed every record arrives. A client
certificate renewed in place is used by a new producer with no record lost or sent twice."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from modelserving import api
from modelserving_sidecar.auth.api_keys import hash_api_key
from modelserving_sidecar.log.status import ANNOTATION
from tests.support import REPO
from tests.support.environment import LocalEnv
from tests.support.pod_volumes import SidecarPod
from tests.support.ports import free_port
from tests.support.scripts import load_script
from tests.support.servings import condition, get_serving, serving_manifest
from tests.support.waiting import wait_for

# One operator for the tests that only make servings and look at what it does with them.
SHARED_OPERATOR = True

kafka_certs = load_script("localenv/kafka_certs.py", "kafka_certs")

KEY = "security-test-key"
CA_SECRET = "my-cluster-cluster-ca-cert"  # Strimzi: <cluster>-cluster-ca-cert
TLS_USER = "my-tls-user"  # a KafkaUser with TLS authentication: its Secret has its name
SCRAM_USER = "modelserving"  # a KafkaUser with SCRAM: the user name is the Secret's name


@dataclass(frozen=True)
class Mode:
    listener: str  # the attribute of localenv's KafkaListeners
    security: dict
    properties: str  # the localenv's client properties file for `modelserving logs`


CA = {"secretName": CA_SECRET}
MODES = {
    "tls": Mode("ssl_bootstrap", {"protocol": "SSL", "ca": CA}, "ssl.properties"),
    "mutual-tls": Mode(
        "mtls_bootstrap",
        {"protocol": "SSL", "ca": CA, "clientCertificate": {"secretName": TLS_USER}},
        "mtls.properties",
    ),
    **{
        mechanism.lower(): Mode(
            "sasl_ssl_bootstrap",
            {
                "protocol": "SASL_SSL",
                "ca": CA,
                "sasl": {"mechanism": mechanism, "passwordSecret": {"name": SCRAM_USER}},
            },
            f"sasl-{mechanism.lower()}.properties",
        )
        for mechanism in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
    },
}


# --------------------------------------------------------------------------- Strimzi's Secrets


def _secret(core, namespace: str, name: str, data: dict[str, bytes]) -> None:
    body = client.V1Secret(
        metadata=client.V1ObjectMeta(name=name),
        data={k: base64.b64encode(v).decode() for k, v in data.items()},
    )
    try:
        core.create_namespaced_secret(namespace, body)
    except ApiException as exc:
        if exc.status != 409:
            raise
        core.replace_namespaced_secret(name, namespace, body)


def strimzi_secrets(core, namespace: str, local_env: LocalEnv, *, ca: bytes, password: str):
    """The Secrets a Strimzi cluster and its KafkaUsers have, entry for entry."""
    kafka = local_env.kafka
    _secret(
        core,
        namespace,
        CA_SECRET,
        {
            "ca.crt": ca,
            "ca.p12": b"\x30\x82 PKCS#12 stand-in",
            "ca.password": b"p12-password",
        },
    )
    _secret(
        core,
        namespace,
        TLS_USER,
        {
            "ca.crt": Path(kafka.ca_file).read_bytes(),
            "user.crt": Path(kafka.client_cert_file).read_bytes(),
            "user.key": Path(kafka.client_key_file).read_bytes(),
            "user.p12": b"\x30\x82 PKCS#12 stand-in",
            "user.password": b"p12-password",
        },
    )
    _secret(
        core,
        namespace,
        SCRAM_USER,
        {
            "password": password.encode(),
            "sasl.jaas.config": (
                "org.apache.kafka.common.security.scram.ScramLoginModule required "
                f'username="{SCRAM_USER}" password="{password}";'
            ).encode(),
        },
    )
    _secret(core, namespace, "mnist-keys", {"team-a": hash_api_key(KEY).encode()})


# --------------------------------------------------------------------------- the parts


class Process:
    """A subprocess whose output goes to a file, stopped at the end."""

    def __init__(self, name: str, command: list[str], log: Path, env: dict[str, str]):
        self.name, self.log_path = name, log
        with log.open("w") as out:
            self.proc = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO
            )

    def output(self) -> str:
        return self.log_path.read_text()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def http(method: str, url: str, body: bytes | None = None, headers: dict | None = None):
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()
    except OSError:
        return 0, {}, b""


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for process in reversed(started):
        process.stop()


@pytest.fixture
def tfserving(tmp_path, processes) -> str:
    """TF Serving's stand-in serving the manifest's model, as a process of its own."""
    port = free_port()
    command = [
        sys.executable,
        str(REPO / "tests" / "support" / "tfserving_standin.py"),
        "--port",
        str(port),
        "--model",
        "mnist",
    ]
    processes.append(Process("tfserving", command, tmp_path / "tfserving.log", dict(os.environ)))
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: http("GET", f"{url}/v1/models/mnist")[0] == 200, 30, "the stand-in")
    return url


@dataclass
class Serving:
    namespace: str
    topic: str
    pod: SidecarPod
    pod_name: str
    sidecar: Process
    url: str

    def predict(self, value: float) -> tuple[int, str]:
        status, headers, _ = http(
            "POST",
            f"{self.url}/v1/models/mnist:predict",
            json.dumps({"instances": [value]}).encode(),
            {"Authorization": f"ApiKey {KEY}", "Content-Type": "application/json"},
        )
        return status, headers.get("X-Request-Id", "")

    def metric(self, name: str) -> float:
        """A counter of the sidecar's inference log, from its /metrics."""
        text = http("GET", f"{self.url}/metrics")[2].decode()
        line = f"modelserving_inference_log_{name}_total "
        return next(float(x[len(line) :]) for x in text.splitlines() if x.startswith(line))


def start_serving(
    crds, kube_client, local_env, namespace, topic, tmp_path, tfserving, processes, mode: Mode
) -> Serving:
    """A ModelServing logging over `mode`'s listener, and its sidecar run here from what the
    operator rendered, once the operator has made the Deployment."""
    core, apps = client.CoreV1Api(kube_client), client.AppsV1Api(kube_client)
    topic = f"{namespace}.{topic}"  # a serving's topic starts with its namespace
    logging = {
        "kafka": {
            "topic": topic,
            "security": mode.security,
            "bootstrapServers": getattr(local_env.kafka, mode.listener),
        }
    }
    manifest = serving_manifest("mnist", logging=logging)
    crds.create_namespaced_custom_object(api.GROUP, api.VERSION, namespace, api.PLURAL, manifest)

    def rolled_out():
        try:
            deployment = apps.read_namespaced_deployment("mnist", namespace)
        except ApiException:
            return None
        pods = core.list_namespaced_pod(
            namespace, label_selector="app.kubernetes.io/instance=mnist"
        )
        return (deployment, pods.items[0].metadata.name) if pods.items else None

    deployment, pod_name = wait_for(rolled_out, 60, "the serving's Deployment and a pod")
    pod = SidecarPod(core, namespace, deployment, tmp_path / "pod")
    config = yaml.safe_load(pod.config_text())
    port = free_port()
    config["listen"] = {"host": "127.0.0.1", "port": port}
    config["grpc"] = {"port": 0}  # no gRPC port: TF Serving's 8500 is not this test's
    config["upstream"]["url"] = tfserving
    config["auth"]["kubeconfig"] = local_env.kubeconfig
    config_file = tmp_path / "sidecar.yaml"
    config_file.write_text(yaml.safe_dump(config))
    env = {**os.environ, "POD_NAME": pod_name, "POD_NAMESPACE": namespace}
    command = [sys.executable, "-m", "modelserving.cli", "sidecar", "--config", str(config_file)]
    sidecar = Process("sidecar", command, tmp_path / "sidecar.log", env)
    processes.append(sidecar)
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert sidecar.proc.poll() is None, f"the sidecar exited:\n{sidecar.output()[-3000:]}"
        return http("GET", f"{url}/readyz")[0] == 200

    wait_for(ready, 60, "the sidecar's /readyz")
    return Serving(namespace, topic, pod, pod_name, sidecar, url)


def read_log(local_env: LocalEnv, topic: str, properties: str) -> list[dict]:
    """`modelserving logs` from the beginning, through the listener of a properties file."""
    command = [
        sys.executable,
        "-m",
        "modelserving.cli",
        "logs",
        topic,
        "--from-beginning",
        "--command-config",
        str(Path(local_env.kafka.client_dir) / properties),
    ]
    env = {k: v for k, v in os.environ.items() if k != "MODELSERVING_KAFKA_BOOTSTRAP"}
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


def logged_keys(local_env: LocalEnv, topic: str, properties: str, count: int) -> list[str]:
    """The keys of the topic's records once it holds `count` of them."""
    keys: list[str] = []

    def enough() -> bool:
        keys[:] = [r["key"] for r in read_log(local_env, topic, properties)]
        return len(keys) >= count

    wait_for(enough, 60, f"{count} records in {topic}", interval=1)
    return keys


def logging_ready(crds, namespace: str) -> dict:
    return condition(get_serving(crds, namespace, "mnist"), "LoggingReady")


# --------------------------------------------------------------------------- the tests


@pytest.mark.parametrize("mode", list(MODES), ids=list(MODES))
def test_a_prediction_is_logged_over_each_secured_listener_and_read_back(
    mode, operator, crds, kube_client, local_env, namespace, topic, tmp_path, tfserving, processes
):
    core = client.CoreV1Api(kube_client)
    strimzi_secrets(
        core,
        namespace,
        local_env,
        ca=Path(local_env.kafka.ca_file).read_bytes(),
        password=Path(local_env.kafka.password_file).read_text().strip(),
    )
    serving = start_serving(
        crds, kube_client, local_env, namespace, topic, tmp_path, tfserving, processes, MODES[mode]
    )

    ready = wait_for(
        lambda: (
            logging_ready(crds, namespace).get("status") == "True"
            and logging_ready(crds, namespace)
        ),
        60,
        "LoggingReady True",
    )
    assert ready["reason"] == "TopicReady", ready
    events = core.list_namespaced_event(namespace).items
    assert any(e.reason == "TopicCreated" for e in events), "the operator created the topic"

    sent = [serving.predict(float(i)) for i in range(3)]
    assert [status for status, _ in sent] == [200, 200, 200]
    keys = logged_keys(local_env, serving.topic, MODES[mode].properties, 3)
    assert sorted(keys) == sorted(request_id for _, request_id in sent)


FAILURES = {
    # A wrong password in the SCRAM user's Secret; the fix: the right one.
    "wrong-password": ("scram-sha-512", "KafkaAuthenticationFailed", SCRAM_USER, "kafka-sasl"),
    # The CA Secret holds a CA that did not sign the broker's certificate; the fix: the right CA.
    "untrusted-ca": ("mutual-tls", "KafkaTLSFailed", CA_SECRET, "kafka-ca"),
}


@pytest.mark.parametrize("failure", list(FAILURES), ids=list(FAILURES))
def test_a_refused_connection_says_why_keeps_the_records_and_delivers_them_once_fixed(
    failure,
    operator,
    crds,
    kube_client,
    local_env,
    namespace,
    topic,
    tmp_path,
    tfserving,
    processes,
):
    mode_name, reason, secret, volume = FAILURES[failure]
    mode = MODES[mode_name]
    core = client.CoreV1Api(kube_client)
    right_ca = Path(local_env.kafka.ca_file).read_bytes()
    right_password = Path(local_env.kafka.password_file).read_text().strip()
    wrong_password = "wrong-" + right_password[::-1]
    untrusted_ca = kafka_certs.make_ca("an unrelated CA").cert_pem
    wrong = failure == "wrong-password"
    strimzi_secrets(
        core,
        namespace,
        local_env,
        ca=right_ca if wrong else untrusted_ca,
        password=wrong_password if wrong else right_password,
    )
    serving = start_serving(
        crds, kube_client, local_env, namespace, topic, tmp_path, tfserving, processes, mode
    )

    refused = wait_for(
        lambda: (
            logging_ready(crds, namespace).get("reason") == reason
            and logging_ready(crds, namespace)
        ),
        60,
        f"LoggingReady {reason}",
    )
    assert refused["status"] == "False"
    assert secret in refused["message"], "the message names the Secret to check"

    sent = [serving.predict(float(i)) for i in range(5)]
    assert [status for status, _ in sent] == [200] * 5, "predictions are not affected"

    def pod_summary() -> dict:
        pod = core.read_namespaced_pod(serving.pod_name, namespace)
        return json.loads((pod.metadata.annotations or {}).get(ANNOTATION) or "{}")

    summary = wait_for(
        lambda: pod_summary().get("state") == reason and pod_summary(),
        60,
        f"the sidecar's log status {reason}",
    )
    # Spooled before the answers left (durability spooled, the default): waited for all the same.
    wait_for(lambda: serving.metric("records_spooled") == 5, 10, "the five records spooled")
    assert (serving.metric("records_spooled"), serving.metric("records_produced")) == (5, 0)

    # No secret in any output: the logs, the Events, the status.
    secrets = [
        right_password,
        wrong_password,
        Path(local_env.kafka.client_key_file).read_text().splitlines()[1],
    ]
    events = json.dumps(
        [e.to_dict() for e in core.list_namespaced_event(namespace).items], default=str
    )
    outputs = {
        "operator log": operator.log(),
        "sidecar log": serving.sidecar.output(),
        "events": events,
        "status": json.dumps(get_serving(crds, namespace, "mnist").get("status")),
        "pod annotation": json.dumps(summary),
    }
    for where, text in outputs.items():
        for value in secrets:
            assert value not in text, f"a secret value is in the {where}"
    assert reason in outputs["sidecar log"], "the sidecar's log says what is wrong"

    # The fix, in place: the Secret as it should be; the kubelet's sync brings it to the pod.
    strimzi_secrets(core, namespace, local_env, ca=right_ca, password=right_password)
    serving.pod.sync(volume)
    wait_for(
        lambda: logging_ready(crds, namespace).get("status") == "True",
        60,
        "LoggingReady True once the Secret is fixed",
    )
    keys = logged_keys(local_env, serving.topic, mode.properties, 5)
    assert sorted(keys) == sorted(request_id for _, request_id in sent), "every record, once"
    assert serving.metric("records_produced") == 5


def test_a_client_certificate_renewed_in_place_is_used_with_no_record_lost_or_repeated(
    operator, crds, kube_client, local_env, namespace, topic, tmp_path, tfserving, processes
):
    core = client.CoreV1Api(kube_client)
    kafka = local_env.kafka
    strimzi_secrets(
        core,
        namespace,
        local_env,
        ca=Path(kafka.ca_file).read_bytes(),
        password=Path(kafka.password_file).read_text().strip(),
    )
    serving = start_serving(
        crds,
        kube_client,
        local_env,
        namespace,
        topic,
        tmp_path,
        tfserving,
        processes,
        MODES["mutual-tls"],
    )
    wait_for(lambda: logging_ready(crds, namespace).get("status") == "True", 60, "LoggingReady")

    sent: list[tuple[int, str]] = []
    stop = threading.Event()

    def load() -> None:  # predictions all along, before, during and after the renewal
        i = 0
        while not stop.is_set():
            sent.append(serving.predict(float(i)))
            i += 1
            time.sleep(0.02)

    loader = threading.Thread(target=load)
    loader.start()
    try:
        wait_for(lambda: len(sent) >= 20, 30, "predictions before the renewal")
        ca = kafka_certs.Issued(
            Path(kafka.ca_file).read_bytes(), Path(kafka.ca_key_file).read_bytes()
        )
        renewed = kafka_certs.issue(ca, "modelserving", server=False)
        secret = core.read_namespaced_secret(TLS_USER, namespace)
        secret.data["user.crt"] = base64.b64encode(renewed.cert_pem).decode()
        secret.data["user.key"] = base64.b64encode(renewed.key_pem).decode()
        core.replace_namespaced_secret(TLS_USER, namespace, secret)
        serving.pod.sync("kafka-client")
        wait_for(
            lambda: "renewing the producer" in serving.sidecar.output(),
            30,
            "the sidecar to renew its producer",
        )
        before = len(sent)
        wait_for(lambda: len(sent) >= before + 20, 30, "predictions after the renewal")
    finally:
        stop.set()
        loader.join()

    assert all(status == 200 for status, _ in sent)
    keys = logged_keys(local_env, serving.topic, "mtls.properties", len(sent))
    assert len(keys) == len(sent), "no record sent twice"
    assert sorted(keys) == sorted(request_id for _, request_id in sent), "no record lost"
    metrics = http("GET", f"{serving.url}/metrics")[2].decode()
    assert 'producer_restarts_total{reason="credentials_changed"} 1.0' in metrics


REFUSED = {
    "client certificate without its key": (
        {"protocol": "SSL", "clientCertificate": {"secretName": "u", "privateKey": ""}},
        "needs both entries of its Secret",
    ),
    "SASL without a password source": (
        {"protocol": "SASL_SSL", "sasl": {"mechanism": "SCRAM-SHA-512"}},
        "sasl needs passwordSecret",
    ),
    "SASL_SSL without sasl": ({"protocol": "SASL_SSL"}, "protocol SASL_SSL needs sasl"),
    "SASL_PLAINTEXT not allowed": (
        {
            "protocol": "SASL_PLAINTEXT",
            "sasl": {"mechanism": "PLAIN", "passwordSecret": {"name": "u"}},
        },
        "use SASL_SSL, or set allowSaslPlaintext: true",
    ),
    "a CA from two sources": (
        {"protocol": "SSL", "ca": {"secretName": "a", "configMapName": "b"}},
        "ca names one source",
    ),
    "a client certificate over PLAINTEXT": (
        {"protocol": "PLAINTEXT", "clientCertificate": {"secretName": "u"}},
        "clientCertificate needs TLS",
    ),
}


@pytest.mark.parametrize("case", list(REFUSED), ids=list(REFUSED))
def test_the_api_server_refuses_security_that_cannot_work_saying_what_to_fix(case, crds, namespace):
    security, words = REFUSED[case]
    manifest = serving_manifest("bad", logging={"kafka": {"security": security}})
    with pytest.raises(ApiException) as refused:
        crds.create_namespaced_custom_object(
            api.GROUP, api.VERSION, namespace, api.PLURAL, manifest
        )
    assert refused.value.status == 422
    assert words in json.loads(refused.value.body)["message"]


def test_allowed_sasl_plaintext_and_strimzi_defaults_are_accepted(crds, namespace):
    for name, security in (
        (
            "plaintext-allowed",
            {
                "protocol": "SASL_PLAINTEXT",
                "allowSaslPlaintext": True,
                "sasl": {"mechanism": "PLAIN", "passwordSecret": {"name": "u"}},
            },
        ),
        (
            "strimzi",
            {
                "protocol": "SASL_SSL",
                "ca": {"secretName": CA_SECRET},
                "sasl": {"mechanism": "SCRAM-SHA-512", "passwordSecret": {"name": "u"}},
            },
        ),
    ):
        manifest = serving_manifest(name, logging={"kafka": {"security": security}})
        crds.create_namespaced_custom_object(
            api.GROUP, api.VERSION, namespace, api.PLURAL, manifest
        )
    stored = get_serving(crds, namespace, "strimzi")["spec"]["logging"]["kafka"]["security"]
    assert stored["ca"]["key"] == "ca.crt"
    assert stored["sasl"]["passwordSecret"]["key"] == "password"


def test_a_secret_the_spec_names_but_that_is_missing_says_which(
    operator, crds, local_env, namespace, topic
):
    logging = {
        "kafka": {
            "topic": f"{namespace}.{topic}",
            "bootstrapServers": local_env.kafka.sasl_ssl_bootstrap,
            "security": MODES["scram-sha-512"].security,
        }
    }
    crds.create_namespaced_custom_object(
        api.GROUP, api.VERSION, namespace, api.PLURAL, serving_manifest("mnist", logging=logging)
    )
    missing = wait_for(
        lambda: (
            logging_ready(crds, namespace).get("reason") == "KafkaCredentialsMissing"
            and logging_ready(crds, namespace)
        ),
        60,
        "LoggingReady KafkaCredentialsMissing",
    )
    assert missing["status"] == "False"
    assert f"the Secret {namespace}/{CA_SECRET}" in missing["message"]
