"""A process that runs the real inference log pipeline for the restart tests: it submits
exchanges, says how far it got on stdout, and waits for a signal, so that a test can kill it
with SIGKILL or end it with SIGTERM at a known point.

    python tests/support/inference_log_driver.py --topic T --bootstrap B --spool DIR \
        --first 0 --count 600 --rate 200 [--max-in-flight 100]

It prints READY once the pipeline is open, RECOVERED n with the records a previous process left
unacknowledged in the spool (this one sends them again), SUBMITTED n after each exchange, DONE
once the spool has counted every submitted record as written (from then on a kill loses none),
DRAINED once Kafka has acknowledged every spooled record, and CLOSED once SIGTERM has closed the
pipeline. It runs by path, so it imports nothing from tests/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time

import prometheus_client

from modelserving_sidecar.config import parse_config
from modelserving_sidecar.log.exchange import Exchange
from modelserving_sidecar.log.pipeline import InferenceLogPipeline, open_inference_log

SPOOLED = "modelserving_inference_log_records_spooled_total"


async def drive(args: argparse.Namespace) -> None:
    logging_settings: dict[str, object] = {
        "mode": "ALL",
        "topic": args.topic,
        "bootstrapServers": args.bootstrap,
        "spoolDir": args.spool,
        "producerStallSeconds": 3,
        "sendTimeoutSeconds": 5,
    }
    if args.max_in_flight:
        logging_settings["maxInFlightRecords"] = args.max_in_flight
    config = parse_config(
        {
            "serving": {"name": "mnist", "namespace": "demo"},
            "model": {"name": "mnist", "version": 1, "modelId": 17},
            "logging": logging_settings,
        }
    )
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    body = json.dumps({"instances": [[0.5] * 300]}).encode()
    registry = prometheus_client.CollectorRegistry()
    async with open_inference_log(config, registry) as sink:
        assert isinstance(sink, InferenceLogPipeline)
        print("READY", flush=True)
        print(f"RECOVERED {sink.spool.recovered_ids}", flush=True)
        started = time.monotonic()
        for i in range(args.first, args.first + args.count):
            now = int(time.time() * 1000)
            sink.submit(Exchange(f"req-{i:06d}", now, 200, body, b"{}", None, None, None))
            submitted = i + 1 - args.first
            if args.rate:
                # Paced by the clock: a sleep per exchange would run slower than the rate asked.
                ahead = submitted / args.rate - (time.monotonic() - started)
                await asyncio.sleep(max(ahead, 0))
            elif i % 100 == 0:
                await asyncio.sleep(0)
            print(f"SUBMITTED {submitted}", flush=True)
        # The test that waits for DONE holds the deadline; this only polls what the spool reports.
        while True:
            if (registry.get_sample_value(SPOOLED) or 0) >= args.count:
                break
            await asyncio.sleep(0.01)
        print("DONE", flush=True)
        while not stop.is_set():
            if not sink.waiting_records():
                print("DRAINED", flush=True)
                break
            await asyncio.sleep(0.01)
        await stop.wait()
    print("CLOSED", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description="drive the inference log pipeline")
    for name in ("--topic", "--bootstrap", "--spool"):
        parser.add_argument(name, required=True)
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--rate", type=float, default=0)
    parser.add_argument("--max-in-flight", type=int, default=0, help="maxInFlightRecords")
    asyncio.run(drive(parser.parse_args()))


if __name__ == "__main__":
    main()
