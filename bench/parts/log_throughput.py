"""Part 3, run in a process of its own (pinned by the caller): how many ~1 KB inference-log
records one sidecar process gets into the real broker per second (acks=all), and what the
request path pays per record (submit) and the writer per record (encode to a spool record).

    python -m bench.parts.log_throughput --bootstrap HOST:PORT --topic T --records N --spool DIR

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry

from bench.parts.payloads import REQUEST, RESPONSE
from modelserving.api import LOG_COMPRESSION
from modelserving_sidecar.config import parse_config
from modelserving_sidecar.log.exchange import Exchange
from modelserving_sidecar.log.pipeline import open_inference_log
from modelserving_sidecar.log.records import SpoolRecordMaker


def exchange(i: int) -> Exchange:
    return Exchange(
        request_id=f"{i:032x}",
        received_ms=time.time_ns() // 1_000_000,
        status=200,
        request_body=REQUEST,
        response_body=RESPONSE,
        model_version=1,
        caller="bench",
        traceparent=None,
    )


def per_record_us(fn: Callable[[], object], n: int, rounds: int = 5) -> float:
    """Microseconds per call, the best of `rounds` (other work on the machine only adds)."""
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, time.perf_counter() - started)
    return best / n * 1e6


async def main_async(args: argparse.Namespace) -> dict:
    config = parse_config(
        {
            "serving": {"name": "bench", "namespace": "bench"},
            "model": {"name": "bench", "version": 1, "modelId": 1},
            "logging": {
                "mode": "ALL",
                "topic": args.topic,
                "bootstrapServers": args.bootstrap,
                "spoolDir": args.spool,
                "compression": args.compression,
            },
        }
    )
    sample = exchange(0)
    maker = SpoolRecordMaker(config.model, config.logging, "bench")
    record = maker.make(sample)
    encode_us = per_record_us(lambda: maker.make(sample), 4_000)
    exchanges = [exchange(i) for i in range(args.records)]
    async with open_inference_log(config, CollectorRegistry()) as sink:
        started = time.perf_counter()
        submit_time = 0.0
        for ex in exchanges:
            while not sink.accepting():  # noqa: ASYNC110 - the sink offers no event to wait on
                await asyncio.sleep(0.0005)
            t0 = time.perf_counter()
            sink.submit(ex)
            submit_time += time.perf_counter() - t0
        submitted = time.perf_counter() - started
    # leaving the context drains the log: every record is acked by then (or left in the spool)
    elapsed = time.perf_counter() - started
    return {
        "compression": args.compression,
        "records": args.records,
        "record_value_bytes": len(record.value) if record else 0,
        "seconds_to_all_acked": round(elapsed, 2),
        "records_per_s": round(args.records / elapsed),
        "seconds_to_submit": round(submitted, 2),
        "submit_us_per_record": round(submit_time / args.records * 1e6, 2),
        "encode_us_per_record": round(encode_us, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--records", type=int, default=60_000)
    parser.add_argument("--spool", required=True)
    parser.add_argument(
        "--compression", default=LOG_COMPRESSION, help="the producer's: zstd, lz4, gzip or none"
    )
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main_async(args))))


if __name__ == "__main__":
    main()
