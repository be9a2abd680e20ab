"""The private names of libraries that `sidecar/modelserving_sidecar/library_internals.py` relies
on, each checked for what the sidecar needs of it: when a library changes one, this fails and
names it, instead of the sidecar breaking in production."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaTimeoutError
from aiokafka.structs import TopicPartition

from modelserving_sidecar.library_internals import (
    DirectAppRunner,
    fail_pending_batches,
    missing_c_extensions,
    record_size,
)

HANDLER: web.AppKey[object] = web.AppKey("handler")


async def started_runner(handler, seen: list, **kwargs) -> tuple[DirectAppRunner, int]:
    """A DirectAppRunner serving `handler` on a free port, its cleanup noted in `seen`."""

    async def context(app: web.Application):
        app[HANDLER] = handler
        yield
        seen.append("cleaned up")

    app = web.Application()
    app.cleanup_ctx.append(context)
    runner = DirectAppRunner(app, HANDLER, **kwargs)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, runner.addresses[0][1]


async def test_a_direct_runner_serves_plain_requests_with_the_apps_startup_and_cleanup() -> None:
    seen: list[object] = []

    async def handler(request: web.BaseRequest) -> web.Response:
        seen.append(type(request))
        return web.Response(text="direct")

    runner, port = await started_runner(handler, seen)
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/any/path") as resp,
        ):
            assert (resp.status, await resp.text()) == (200, "direct")
    finally:
        await runner.cleanup()
    # A plain BaseRequest: no router matched anything (a web.Request would mean the router ran).
    assert seen == [web.BaseRequest, "cleaned up"]


async def test_stop_listening_lets_a_request_in_flight_finish_and_leaves_cleanup_for_later() -> (
    None
):
    seen: list[str] = []
    started = asyncio.Event()

    async def handler(request: web.BaseRequest) -> web.Response:
        started.set()
        await asyncio.sleep(0.3)
        return web.Response(text="finished")

    runner, port = await started_runner(handler, seen, shutdown_timeout=5)
    async with aiohttp.ClientSession() as session:
        in_flight = asyncio.create_task(session.get(f"http://127.0.0.1:{port}/"))
        await started.wait()
        await runner.stop_listening()
        answer = await in_flight
        assert (answer.status, await answer.text()) == (200, "finished")
        assert seen == []  # the app's cleanup contexts (the log's drain) are still to come
        try:
            await session.get(f"http://127.0.0.1:{port}/")
        except aiohttp.ClientConnectionError:
            pass
        else:
            raise AssertionError("a new connection was taken after stop_listening")
    await runner.cleanup()
    assert seen == ["cleaned up"]


async def test_failing_a_producers_batches_lets_its_stop_return() -> None:
    producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:9", request_timeout_ms=60_000)
    batch = producer.create_batch()
    batch.append(key=b"k", value=b"v", timestamp=None)
    # Queue a batch without a broker, as a producer holds them while Kafka is away.
    queued = producer._message_accumulator.add_batch(batch, TopicPartition("t", 0), timeout=60)
    future = await queued
    fail_pending_batches(producer, KafkaTimeoutError("producer replaced"))
    await asyncio.sleep(0)
    assert isinstance(future.exception(), KafkaTimeoutError)


def test_a_records_size_is_what_kafka_counts() -> None:
    # The value, key and header bytes, and a batch's overhead (a record alone fills a batch).
    for value in (b"v" * 100, b"v" * 1_000_000):
        size = record_size(b"key", value, [("h", b"x")])
        assert len(value) + 5 < size < len(value) + 200


def test_c_extensions_are_in_use_here() -> None:
    assert missing_c_extensions() == []
