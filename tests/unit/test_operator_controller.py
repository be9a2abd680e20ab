"""The operator's controller (operator/modelserving_operator/runtime/controller.py): workers
reconcile what the queue hands out, a failure is retried, a status write that waits is marked
again when due, a serving gone leaves no timer, a bug does not take a worker, and the first
catch-up is told and gives back the start's memory once."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import pytest

from modelserving_operator.metrics import OperatorMetrics
from modelserving_operator.runtime import controller as controller_module
from modelserving_operator.runtime import kopf_internals
from modelserving_operator.runtime.controller import Again, Controller, Outcome

A, B = ("ns", "a"), ("ns", "b")


@pytest.fixture(autouse=True)
def caches_current(monkeypatch):
    # No kopf running: nothing is being indexed, paused or listed.
    monkeypatch.setattr(kopf_internals, "_indexing", [])
    monkeypatch.setattr(kopf_internals, "_pausing", [])
    monkeypatch.setattr(kopf_internals, "_watched", [])
    # A full collection at the first catch-up takes longer than these tests' timers
    monkeypatch.setattr(controller_module, "release_startup_memory", lambda: None)


async def until(check: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "not in time"
        await asyncio.sleep(0.005)


class Servings:
    """A reconcile that answers what each serving's next run is told to, and records runs."""

    def __init__(self, answers: dict[tuple[str, str], list[Outcome | Exception]]) -> None:
        self.answers, self.runs = answers, []

    async def __call__(self, key: tuple[str, str], serving_event: bool) -> Outcome:
        self.runs.append((key, serving_event))
        answers = self.answers.get(key) or [None]
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


def controller(servings: Servings, *, retry_seconds: float = 0.02) -> Controller:
    return Controller(
        servings,
        workers=2,
        retry_seconds=retry_seconds,
        metrics=OperatorMetrics(),
        writes=lambda: 7,
    )


async def test_a_failed_reconcile_runs_again_after_its_delay_as_a_serving_event():
    servings = Servings({A: [Again(0.02, failed=True), None], B: ["gone"]})
    c = controller(servings)
    c.start()
    c.mark(A, serving_event=False)
    c.mark(B, serving_event=False)
    await until(lambda: servings.runs.count((A, True)) == 1)
    assert servings.runs.count((A, False)) == 1 and (B, False) in servings.runs
    assert c.metrics.reconciles == {"done": 1, "retry": 1, "error": 0, "gone": 1}
    assert not c.retries and c.reconciled == {A}  # the one gone is no serving reconciled
    c.close()


async def test_a_status_write_that_waits_is_marked_when_due_unless_a_sooner_mark_is_set():
    servings = Servings({A: [Again(0.05, failed=False), Again(30, failed=False), None]})
    c = controller(servings)
    c.start()
    c.mark(A, serving_event=False)
    await until(lambda: A in c.waits)
    due = c.waits[A].when()
    await until(lambda: len(servings.runs) == 2)  # marked again when due
    assert c.metrics.reconciles["retry"] == 0
    # The second run asked for 30 s; a later mark for less replaces it, one for more does not
    await until(lambda: A in c.waits)
    later = c.waits[A].when()
    assert later > due + 20
    c._mark_later(c.waits, A, 60)
    assert c.waits[A].when() == later
    c._mark_later(c.waits, A, 0.01)
    await until(lambda: len(servings.runs) == 3)
    c.close()


async def test_a_serving_forgotten_keeps_no_timer_and_is_not_run_again():
    servings = Servings({A: [Again(0.05, failed=True)], B: [Again(0.1, failed=True), None]})
    c = controller(servings)
    c.start()
    c.mark(A, serving_event=True)
    await until(lambda: A in c.retries)
    handle = c.retries[A]
    c.forget(A)
    assert handle.cancelled() and not c.retries and A not in c.reconciled
    # Past the retry it had (B's, later, has come): it does not come
    c.mark(B, serving_event=True)
    await until(lambda: servings.runs.count((B, True)) == 2)
    assert (A, True) not in servings.runs[1:]
    assert servings.runs[0] == (A, True)
    c.close()


async def test_a_bug_in_a_reconcile_is_logged_retried_and_the_workers_go_on(caplog):
    servings = Servings({A: [RuntimeError("a bug"), None]})
    c = controller(servings)
    c.start()
    c.mark(A, serving_event=False)
    await until(lambda: len(servings.runs) == 2)  # retried after --retry-seconds
    assert c.metrics.reconciles["error"] == 1 and c.metrics.reconciles["done"] == 1
    assert "reconciling ns/a failed" in caplog.text
    c.mark(B, serving_event=False)  # the worker that met the bug still works
    await until(lambda: (B, False) in servings.runs)
    assert all(not task.done() for task in c.tasks)
    c.close()


async def test_each_catch_up_is_told_and_the_first_gives_back_the_start_memory(monkeypatch, caplog):
    trims = []
    monkeypatch.setattr(controller_module, "release_startup_memory", lambda: trims.append(1))
    caplog.set_level(logging.INFO, controller_module.__name__)
    servings = Servings({})
    c = controller(servings)
    c.start()
    c.mark(A, serving_event=True)
    c.mark(B, serving_event=True)
    await until(lambda: "caught up: 2 servings reconciled, 7 writes since the start" in caplog.text)
    c.mark(A, serving_event=False)
    await until(lambda: caplog.text.count("caught up:") >= 2)
    assert c.caught_up and trims == [1]
    c.close()


async def test_the_workers_and_checks_start_once_and_stop_with_the_controller():
    checks = []

    async def check() -> None:
        checks.append(1)
        await asyncio.Event().wait()

    c = controller(Servings({}))
    c.start(check)
    tasks = list(c.tasks)
    c.start(check)  # every later event
    assert c.tasks == tasks and len(tasks) == 3  # two workers and the check
    await until(lambda: checks == [1])
    c.close()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert all(task.cancelled() for task in tasks)
