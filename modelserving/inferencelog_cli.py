"""`modelserving logs TOPIC`: print a serving's inference log records as JSON lines.

Each line holds the record's seven Avro fields under their schema names, then the Kafka key,
headers, topic, partition, offset and timestamp.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys

from modelserving.inferencelog import read_inference_log

BOOTSTRAP_ENV = "MODELSERVING_KAFKA_BOOTSTRAP"


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("topic", metavar="TOPIC", help="the serving's inference log topic")
    parser.add_argument(
        "--bootstrap-servers",
        default=os.environ.get(BOOTSTRAP_ENV),
        required=BOOTSTRAP_ENV not in os.environ,
        help=f"Kafka bootstrap servers, host:port[,host:port] (default: ${BOOTSTRAP_ENV})",
    )
    parser.add_argument(
        "--from-beginning",
        action="store_true",
        help="start at the oldest record kept (default: only records that arrive from now on)",
    )
    parser.add_argument(
        "--follow", action="store_true", help="keep waiting for new records (stop with Ctrl-C)"
    )
    parser.add_argument("--model", metavar="NAME", help="only records of this model name")
    parser.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="only records with this header value (e.g. caller=team-a); may be repeated",
    )
    parser.add_argument(
        "--confluent",
        action="store_true",
        help="values carry Confluent's schema-registry prefix (default: plain Avro)",
    )


def _where(pairs: list[str]) -> dict[str, str]:
    where = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--header {pair!r}: expected NAME=VALUE")
        where[name] = value
    return where


async def _print_records(args: argparse.Namespace) -> None:
    async for logged in read_inference_log(
        args.topic,
        args.bootstrap_servers,
        from_beginning=args.from_beginning,
        follow=args.follow,
        model=args.model,
        confluent=args.confluent,
        where=_where(args.header),
    ):
        sys.stdout.write(json.dumps(logged.to_json_dict(), ensure_ascii=False) + "\n")
        if args.follow:
            sys.stdout.flush()


def run(args: argparse.Namespace) -> int:
    try:
        asyncio.run(_print_records(args))
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:
        # `| head` closed the pipe: stop quietly, as other CLI tools do.
        sys.stderr.close()
    return 0
