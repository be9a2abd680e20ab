"""Fixtures shared by every test.

Tests under tests/integration/ are marked `integration` and run against the
local environment of real parts (localenv/): the first one that needs it starts
it once per session, or reuses it when it is already up (`make env-up`). Each
test gets its own namespace or topic. When an integration test fails, the
parts' logs are copied to test-logs/. Tests under tests/unit/ need none of it.
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

from tests.support import REPO
from tests.support.environment import KafkaBroker, LocalEnv, localenv
from tests.support.namespaces import delete_namespaces, make_namespaces, unique_name

LOCALENV_SCRIPT = REPO / "localenv" / "localenv.py"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in Path(str(item.fspath)).parts:
            item.add_marker(pytest.mark.integration)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    if report.failed and item.get_closest_marker("integration"):
        item.session.stash.setdefault(_FAILED_KEY, []).append(item.nodeid)
    return report


_FAILED_KEY = pytest.StashKey[list]()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if session.stash.get(_FAILED_KEY, None) and localenv.settings_file().exists():
        dest = REPO / "test-logs"
        localenv.collect_logs(dest)
        print(f"\nintegration tests failed: the parts' logs are in {dest}", file=sys.stderr)


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
def local_env(request: pytest.FixtureRequest) -> Iterator[LocalEnv]:
    was_up = localenv.settings_file().exists()
    said = _environment_up(request.config)
    if said is not None:
        pytest.fail(
            "the local environment of real parts could not be provisioned "
            f"(python3 localenv/localenv.py up):\n{said[-4000:]}",
            pytrace=False,
        )
    data = json.loads(localenv.settings_file().read_text())
    yield LocalEnv(
        kubeconfig=data["kubeconfig"],
        kafka_bootstrap=data["kafka_bootstrap"],
        bin_path=data["path"],
        kafka=localenv.KafkaListeners(**data["kafka"]),
    )
    if not was_up and os.environ.get("MODELSERVING_KEEP_ENV") != "1":
        localenv.down()


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


@pytest.fixture
def kafka_broker(local_env: LocalEnv) -> Iterator[KafkaBroker]:
    """Control of the real broker; it is running again when the test ends, whatever happened."""
    broker = KafkaBroker(local_env.kafka_bootstrap)
    yield broker
    broker.resume()
    broker.start()


@pytest_asyncio.fixture(loop_scope="session")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client session for one test, with room for 50 connections at once."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=50)) as session:
        yield session
