"""Fixtures shared by every test.

Tests under tests/integration/ are marked `integration` and run against the
local environment of real parts (localenv/): the first one that needs it starts
it once per run (one worker at a time asks, under a lock, when pytest-xdist runs
several), or reuses it when it is already up (`make env-up`); the run takes it
down at its end when it started it. A run that will reach integration tests has
its first process start the environment at once, beside collection and the unit
tests, so that no worker waits for it when its first integration test comes.
Each test gets its own namespace or topic, and a test that takes a part down
gets one of its own (`kafka_broker`, `spare_apiserver`), so that the tests
beside it keep theirs. When an integration test fails, the parts' logs are
copied to test-logs/. Tests under tests/unit/ need none of it.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from hypothesis import settings

from tests.support import REPO
from tests.support.environment import KafkaBroker, LocalEnv, SpareApiServer, localenv
from tests.support.namespaces import delete_namespaces, make_namespaces, unique_name
from tests.support.process_node import (
    ProcessNode,
    delete_process_node,
    make_process_node,
)

# Hypothesis' draws: `make test` (what CI runs) takes every property's full count of examples;
# `make unit`, the loop before a commit, runs the same properties searched less deeply: a fifth
# of the examples (`--hypothesis-profile quick`; tests.support.examples scales the counts a test
# sets itself).
settings.register_profile("quick", max_examples=20)

LOCALENV_SCRIPT = REPO / "localenv" / "localenv.py"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in Path(str(item.fspath)).parts:
            item.add_marker(pytest.mark.integration)


def _is_worker(config: pytest.Config) -> bool:
    """Whether this process is one of pytest-xdist's workers (the run's first process, the one
    that reports, is not)."""
    return hasattr(config, "workerinput")


# Whether the local environment was up before the run began: a run takes down only what it
# started.
_WAS_UP = pytest.StashKey[bool]()
# The environment's start begun by the run's first process (see `_start_early`).
_EARLY_START = pytest.StashKey[subprocess.Popen[bytes]]()
_FAILED_INTEGRATION: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    if not _is_worker(config):
        config.stash[_WAS_UP] = localenv.settings_file().exists()
        if not config.stash[_WAS_UP] and _reaches_integration(config):
            config.stash[_EARLY_START] = _start_early()


def _reaches_integration(config: pytest.Config) -> bool:
    """Whether the run's arguments name integration tests (a path at or above
    tests/integration, or none: the testpaths) and its marker expression does not leave them
    out: a unit run (`make unit`, `pytest tests/unit`) starts nothing."""
    if "not integration" in (config.option.markexpr or ""):
        return False
    integration = (REPO / "tests" / "integration").resolve()
    args = [a.split("::", 1)[0] for a in config.args if not a.startswith("-")] or ["tests"]
    for arg in args:
        path = (Path(config.invocation_params.dir) / arg).resolve()
        if path == integration or integration in path.parents or path in integration.parents:
            return True
    return False


def _start_early() -> subprocess.Popen[bytes]:
    """`localenv.py up` in the background: a worker that needs the environment before it is
    up waits on `up`'s lock, then finds it up. What it says goes to .localenv/early-up.log;
    should it fail, the first worker's own `up` says why."""
    localenv.STATE.mkdir(parents=True, exist_ok=True)
    with (localenv.STATE / "early-up.log").open("wb") as said:
        return subprocess.Popen(
            [sys.executable, str(LOCALENV_SCRIPT), "up"], stdout=said, stderr=subprocess.STDOUT
        )


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # The first process sees every worker's reports here, and its own when there are none.
    if report.failed and report.nodeid.startswith("tests/integration/"):
        _FAILED_INTEGRATION.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _is_worker(session.config):
        return
    if _FAILED_INTEGRATION and localenv.settings_file().exists():
        dest = REPO / "test-logs"
        localenv.collect_logs(dest)
        print(f"\nintegration tests failed: the parts' logs are in {dest}", file=sys.stderr)


def pytest_unconfigure(config: pytest.Config) -> None:
    if (early := config.stash.get(_EARLY_START, None)) is not None:
        early.wait()  # a run that ended before the environment was up takes it down all the same
    if (
        not _is_worker(config)
        and not config.stash.get(_WAS_UP, True)
        and localenv.settings_file().exists()
        and os.environ.get("MODELSERVING_KEEP_ENV") != "1"
    ):
        localenv.down()


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    """Where the run's time went, by test file (setup, call and teardown of its tests summed):
    the figure to look at before making the suite slower, printed in every run, CI's too."""
    by_file: dict[str, float] = {}
    counts: dict[str, int] = {}
    for reports in terminalreporter.stats.values():
        for report in reports:
            if isinstance(report, pytest.TestReport):
                path = report.nodeid.split("::", 1)[0]
                by_file[path] = by_file.get(path, 0.0) + report.duration
                counts[path] = counts.get(path, 0) + (report.when == "call")
    if not by_file:
        return
    total = sum(by_file.values())
    terminalreporter.section(f"time by test file ({total:.0f} s in tests)")
    for path, seconds in sorted(by_file.items(), key=lambda kv: -kv[1])[:TIME_REPORT_FILES]:
        share = 100 * seconds / total if total else 0.0
        terminalreporter.write_line(
            f"{seconds:8.1f} s {share:5.1f} %  {counts[path]:4d} tests  {path}"
        )


# How many of the slowest test files the time report lists.
TIME_REPORT_FILES = 30


@pytest.fixture(scope="session")
def local_env(request: pytest.FixtureRequest) -> LocalEnv:
    said = _environment_up(request.config)  # the first worker starts it, the others reuse it
    if said is not None:
        pytest.fail(
            "the local environment of real parts could not be provisioned "
            f"(python3 localenv/localenv.py up):\n{said[-4000:]}",
            pytrace=False,
        )
    data = json.loads(localenv.settings_file().read_text())
    return LocalEnv(
        kubeconfig=data["kubeconfig"],
        kafka_bootstrap=data["kafka_bootstrap"],
        bin_path=data["path"],
        kafka=localenv.KafkaListeners(**data["kafka"]),
    )


def _environment_up(config: pytest.Config) -> str | None:
    """`localenv.py up`, its lines shown as they come (a first run builds its parts for
    minutes, saying which and how far along), past pytest's capture; None once it is up, else
    what it said."""
    capture = config.pluginmanager.getplugin("capturemanager")
    shown = capture.global_and_fixture_disabled() if capture else contextlib.nullcontext()
    said: list[str] = []
    with shown:
        proc = subprocess.Popen(
            [sys.executable, str(LOCALENV_SCRIPT), "up"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            said.append(line)
            sys.stderr.write(line)
            sys.stderr.flush()
    return None if proc.wait() == 0 else "".join(said)


@pytest.fixture(scope="session")
def kube_client(local_env: LocalEnv):
    """A kubernetes.client.ApiClient with the cluster's admin credentials."""
    from kubernetes import config

    api = config.new_client_from_config(config_file=local_env.kubeconfig)
    yield api
    api.close()


@pytest.fixture
def namespace(kube_client) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards."""
    (name,) = make_namespaces(kube_client, 1)
    yield name
    delete_namespaces(kube_client, [name])


@pytest.fixture
def topic() -> str:
    """A topic name of one test's own."""
    return unique_name("topic")


@pytest.fixture(scope="module")
def spare_parts(local_env: LocalEnv) -> Iterator[str]:
    """The name under which the module's spare parts run (started when a test first asks for
    one, stopped at the module's end: a second API server's watch cache and an idle broker
    cost the machine all the while they run). A worker runs one module at a time."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "main")
    yield name
    localenv.spares_down(name)


@pytest.fixture
def kafka_broker(spare_parts: str) -> Iterator[KafkaBroker]:
    """A real broker of the test's own (plaintext, one node) to stop, kill or hang: the tests
    beside it keep the shared one. It is running again when the test ends, whatever happened."""
    broker = KafkaBroker(spare_parts)
    yield broker
    broker.resume()
    broker.start()


@pytest.fixture(scope="module")
def jaeger(spare_parts: str) -> localenv.JaegerEndpoints:
    """A real trace backend of the module's own: Jaeger v2 all in one, spans in memory, its
    OTLP/HTTP endpoint (`otlp_http`) and query API (`query_url`). Started when a test first asks
    for it (`up` does not), stopped with the module's spare parts."""
    return localenv.jaeger_start(spare_parts)


@pytest.fixture
def spare_apiserver(spare_parts: str) -> SpareApiServer:
    """A second kube-apiserver of the cluster for the test's operator, to restart without
    taking the API server from the tests beside it."""
    return SpareApiServer(spare_parts, str(localenv.spare_apiserver_start(spare_parts)))


@pytest_asyncio.fixture(loop_scope="session")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client session for one test, with room for 50 connections at once."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=50)) as session:
        yield session


@pytest.fixture(scope="session")
def process_node(kube_client) -> Iterator[ProcessNode]:
    """This worker's KWOK node whose pods get addresses this machine serves (tests/support/
    process_node): a pod placed there (`process_node.placement()`) gets an address a process
    here can bind."""
    node = make_process_node(kube_client, localenv.CLUSTER_NAME)
    yield node
    delete_process_node(kube_client, node)
