"""Several model versions behind the real sidecar process, with its inference log on the real
broker: a weighted split within a binomial bound, sticky keys, a weight change that moves only the
keys whose bucket moved (taken from the routing file replaced in place, without a restart or a
failed request), a LOADING version that gets no traffic until it is AVAILABLE, and a shadow whose
answers are records of their own and which, hanging, changes nothing for the caller.

The TF Serving stand-in's versions answer y = version (slope 0): a prediction says which version
made it."""

from __future__ import annotations

import asyncio
import math
from collections import Counter

import aiohttp

from modelserving.inferencelog.query import InferenceLogQuery
from modelserving.inferencelog.reader import read_inference_log
from modelserving.inferencelog.record import HEADER_MODEL_VERSION, HEADER_ROLE
from tests.support.sidecar_configs import sidecar_config
from tests.support.sidecar_process import SidecarProcess, running_sidecar
from tests.support.tfserving_standin import (
    StandInModel,
    StandInVersion,
    TFServingStandIn,
    running_standin,
)
from tests.support.waiting import wait_for_async

MODEL = "fraud"
SIGMAS = 4.5  # a binomial count this far from its mean fails about once in 150,000 runs


def within_binomial(count: int, n: int, p: float) -> bool:
    return abs(count - n * p) <= SIGMAS * math.sqrt(n * p * (1 - p))


def versions(*numbers: int) -> StandInModel:
    return StandInModel({v: StandInVersion(slope=0.0, intercept=float(v)) for v in numbers})


def fraud_config(upstream: str, **sections) -> dict:
    config = sidecar_config(
        upstream,
        serving={"name": MODEL},
        model={"name": MODEL, "version": 3, "modelId": 21},
        upstream={"timeoutSeconds": 10},
    )
    return {**config, **sections}  # a section given replaces the sidecar_config one


def split(*weights: tuple[int, int, str], **rest) -> dict:
    return {
        "versions": [
            {"version": v, "weight": w, "labels": [label] if label else []}
            for v, w, label in weights
        ],
        **rest,
    }


async def predict(
    http: aiohttp.ClientSession, sidecar: SidecarProcess, headers: dict | None = None
) -> tuple[int, int | None, dict]:
    """One prediction: the code, the version that made it (from the answer), the headers."""
    path = f"{sidecar.url}/v1/models/{MODEL}:predict"
    async with http.post(path, json={"instances": [0.0]}, headers=headers or {}) as resp:
        body = await resp.json()
        made_by = int(body["predictions"][0]) if resp.status == 200 else None
        return resp.status, made_by, resp.headers.copy()


async def predict_many(http, sidecar, n: int, headers_of=lambda i: None) -> list[tuple]:
    answers: list[tuple] = []
    for start in range(0, n, 50):
        answers += await asyncio.gather(
            *(predict(http, sidecar, headers_of(i)) for i in range(start, min(n, start + 50)))
        )
    return answers


async def records_of(topic: str, bootstrap: str, expected: int) -> list:
    records: list = []

    async def all_there() -> bool:
        records[:] = [
            r
            async for r in read_inference_log(
                topic, bootstrap, InferenceLogQuery(from_beginning=True)
            )
        ]
        return len(records) >= expected

    await wait_for_async(all_there, timeout=60, what=f"{expected} records on {topic}", interval=0.5)
    return records


async def test_a_90_10_split_lands_within_a_binomial_bound_and_each_record_says_its_version(
    local_env, topic, tmp_path, http
):
    logging = {
        "mode": "ALL",
        "topic": topic,
        "bootstrapServers": local_env.kafka_bootstrap,
        "spoolDir": str(tmp_path / "spool"),
    }
    routing = split((3, 90, "stable"), (4, 10, "canary"))
    async with (
        running_standin(TFServingStandIn({MODEL: versions(3, 4)})) as (_, upstream),
        running_sidecar(tmp_path, fraud_config(upstream, logging=logging), routing) as sidecar,
    ):
        answers = await predict_many(http, sidecar, 2000)
        served = await sidecar.metric(
            http, 'modelserving_sidecar_requests_total{code="200",route="predict",version="4"}'
        )
    assert {status for status, _, _ in answers} == {200}
    # The answer's header names the version whose prediction it is.
    assert all(headers["x-model-version"] == str(made_by) for _, made_by, headers in answers)
    by_version = Counter(made_by for _, made_by, _ in answers)
    assert set(by_version) == {3, 4}
    assert within_binomial(by_version[4], 2000, 0.10), by_version
    assert served == by_version[4]

    records = await records_of(topic, local_env.kafka_bootstrap, 2000)
    made_by_of = {h["X-Request-Id"]: made_by for _, made_by, h in answers}
    assert len(records) == 2000
    for logged in records:
        version = made_by_of[logged.key]
        assert logged.record.model_version == version
        assert logged.headers[HEADER_MODEL_VERSION] == str(version)
        assert logged.headers[HEADER_ROLE] == {3: "stable", 4: "canary"}[version]


async def test_sticky_keys_stay_on_one_version_and_a_weight_change_moves_only_the_keys_whose_bucket_moved(  # noqa: E501
    tmp_path, http
):
    sticky = {"by": "header", "header": "x-session-id"}
    sessions = [f"session-{i}" for i in range(500)]

    async def versions_of_sessions(sidecar: SidecarProcess, times: int = 1) -> dict[str, set]:
        seen: dict[str, set] = {s: set() for s in sessions}
        for _ in range(times):
            answers = await predict_many(
                http, sidecar, len(sessions), lambda i: {"x-session-id": sessions[i]}
            )
            for session, (status, made_by, _) in zip(sessions, answers, strict=True):
                assert status == 200
                seen[session].add(made_by)
        return seen

    async with (
        running_standin(TFServingStandIn({MODEL: versions(3, 4)})) as (_, upstream),
        running_sidecar(
            tmp_path, fraud_config(upstream), split((3, 90, ""), (4, 10, ""), sticky=sticky)
        ) as sidecar,
    ):
        seen = await versions_of_sessions(sidecar, times=3)
        assert all(len(v) == 1 for v in seen.values()), "a session reached two versions"
        before = {s: v.pop() for s, v in seen.items()}
        assert within_binomial(sum(v == 4 for v in before.values()), len(sessions), 0.10)

        # 90/10 -> 80/20 while requests keep coming: none fails, the process is the same.
        pid = sidecar.process.pid
        failures: list[int] = []
        flowing = True

        async def traffic() -> None:
            while flowing:
                status, _, _ = await predict(http, sidecar, {"x-session-id": "steady"})
                if status != 200:
                    failures.append(status)

        flow = asyncio.create_task(traffic())
        sidecar.set_routing(split((3, 80, ""), (4, 20, ""), sticky=sticky))
        stable_ones = [s for s, v in before.items() if v == 3]

        async def taken() -> bool:  # some session of version 3 has moved: the table was swapped
            answers = await predict_many(
                http, sidecar, len(stable_ones), lambda i: {"x-session-id": stable_ones[i]}
            )
            return any(made_by == 4 for _, made_by, _ in answers)

        await wait_for_async(taken, timeout=20, what="the new routing to be taken", interval=0.5)
        flowing = False
        await flow
        assert failures == []
        assert sidecar.process.returncode is None and sidecar.process.pid == pid

        seen = await versions_of_sessions(sidecar, times=2)
    assert all(len(v) == 1 for v in seen.values()), "a session reached two versions"
    after = {s: v.pop() for s, v in seen.items()}
    moved = [s for s in sessions if before[s] != after[s]]
    # Only sessions of version 3 moved, to version 4; about 10% of all (20% - 10%).
    assert {(before[s], after[s]) for s in moved} == {(3, 4)}
    assert within_binomial(len(moved), len(sessions), 0.10), len(moved)


async def test_a_loading_version_gets_no_traffic_and_its_share_once_available(tmp_path, http):
    model = versions(3, 4)
    model.hold_loading(4)
    async with (
        running_standin(TFServingStandIn({MODEL: model})) as (_, upstream),
        running_sidecar(
            tmp_path, fraud_config(upstream), split((3, 90, ""), (4, 10, "canary"))
        ) as sidecar,
    ):
        answers = await predict_many(http, sidecar, 500)
        assert {(status, made_by) for status, made_by, _ in answers} == {(200, 3)}

        model.make_available(4)

        async def canary_serves() -> bool:
            return any(made_by == 4 for _, made_by, _ in await predict_many(http, sidecar, 50))

        await wait_for_async(canary_serves, timeout=10, what="version 4 to get traffic")
        answers = await predict_many(http, sidecar, 1000)
        # The label reaches the canary directly, whatever the split.
        status, made_by, headers = await predict_path(http, sidecar, "labels/canary")
    assert {status for status, _, _ in answers} == {200}
    assert within_binomial(sum(made_by == 4 for _, made_by, _ in answers), 1000, 0.10)
    assert (status, made_by, headers["x-model-version"]) == (200, 4, "4")


async def predict_path(http, sidecar: SidecarProcess, tail: str) -> tuple[int, int | None, dict]:
    async with http.post(
        f"{sidecar.url}/v1/models/{MODEL}/{tail}:predict", json={"instances": [0.0]}
    ) as resp:
        body = await resp.json()
        made_by = int(body["predictions"][0]) if resp.status == 200 else None
        return resp.status, made_by, resp.headers.copy()


async def test_with_a_full_shadow_each_request_is_two_records_under_one_key(
    local_env, topic, tmp_path, http
):
    logging = {
        "mode": "ALL",
        "topic": topic,
        "bootstrapServers": local_env.kafka_bootstrap,
        "spoolDir": str(tmp_path / "spool"),
    }
    routing = split((3, 100, ""), shadow={"version": 5, "percent": 100})
    async with (
        running_standin(TFServingStandIn({MODEL: versions(3, 5)})) as (_, upstream),
        running_sidecar(tmp_path, fraud_config(upstream, logging=logging), routing) as sidecar,
    ):
        answers = await predict_many(http, sidecar, 40)
        records = await records_of(topic, local_env.kafka_bootstrap, 80)
    assert {(status, made_by) for status, made_by, _ in answers} == {(200, 3)}
    assert len(records) == 80
    by_key: dict[str, list] = {}
    for logged in records:
        by_key.setdefault(logged.key, []).append(logged)
    assert set(by_key) == {headers["X-Request-Id"] for _, _, headers in answers}
    for pair in by_key.values():
        seen = {
            (r.headers[HEADER_ROLE], r.record.model_version, r.record.inference_response)
            for r in pair
        }
        assert seen == {
            ("stable", 3, '{"predictions": [3.0]}'),
            ("shadow", 5, '{"predictions": [5.0]}'),
        }
        assert len({r.record.inference_request for r in pair}) == 1


async def test_a_shadow_that_hangs_changes_nothing_for_the_caller(tmp_path, http):
    model = versions(3, 5)
    model.served[5].delay_seconds = 3600
    routing = split((3, 100, ""), shadow={"version": 5, "percent": 100})
    config = {"shadow": {"maxConcurrency": 2, "queueSize": 4, "timeoutSeconds": 3600}}
    async with (
        running_standin(TFServingStandIn({MODEL: model})) as (_, upstream),
        running_sidecar(tmp_path, fraud_config(upstream, **config), routing) as sidecar,
    ):
        answers = await predict_many(http, sidecar, 200)
        dropped = await sidecar.metric(
            http, 'modelserving_sidecar_shadow_dropped_total{reason="queue_full"}'
        )
    # Every caller got version 3's answer while the shadow held its two copies for an hour.
    assert {(status, made_by) for status, made_by, _ in answers} == {(200, 3)}
    assert dropped == 200 - 2 - 4
