"""The private names of libraries that `modelserving/library_internals.py` relies
on, each checked for what the sidecar needs of it: when a library changes one, this fails and
names it, instead of the sidecar breaking in production."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import aiohttp
from aiohttp import web
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaTimeoutError
from aiokafka.structs import TopicPartition

from modelserving.library_internals import (
    DirectAppRunner,
    connect_to_broker,
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


async def test_connecting_once_to_a_broker_raises_what_refused_it(tmp_path: Path) -> None:
    """What `diagnose` needs of aiokafka's `create_conn`: it takes a client's options and what
    refuses the connection (here the broker's certificate) is in the chain of what it raises.
    (A connection it makes to a real broker: tests/integration/test_kafka_security.py.)"""
    from tests.support.scripts import load_script

    certs = load_script("localenv/kafka_certs.py", "kafka_certs")
    broker = certs.issue(certs.make_ca(), "kafka", server=True, hosts=("127.0.0.1",))
    (tmp_path / "broker.pem").write_bytes(broker.key_pem + broker.cert_pem)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "broker.pem")

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=context)
    untrusted = ssl.create_default_context(cadata=certs.make_ca("another CA").cert_pem.decode())
    refused: BaseException | None = None
    async with server:
        try:
            conn = await connect_to_broker(
                "127.0.0.1",
                server.sockets[0].getsockname()[1],
                request_timeout_ms=5000,
                security_protocol="SSL",
                ssl_context=untrusted,
            )
        except Exception as exc:
            refused = exc
        else:
            conn.close()
            raise AssertionError("a broker whose certificate is not trusted was connected to")
    chain = []
    while refused is not None and refused not in chain:
        chain.append(refused)
        refused = refused.__cause__ or refused.__context__
    assert any(isinstance(e, ssl.SSLCertVerificationError) for e in chain), chain
