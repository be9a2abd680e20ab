"""`modelserving logs TOPIC`: print a serving's inference log records as JSON lines.

Each line holds the record's seven Avro fields under their schema names, then the Kafka key (the
request id), headers (request-id, traceparent, tracestate when the caller sent one, caller,
model-version, role, pod, and payload when a payload was redacted or cut), topic, partition, offset
and timestamp. `--model`, `--model-version`, `--status`, `--key` and `--header` keep only the
records asked for; `--dedupe` drops the copies a crash re-sent and says on stderr how many it
dropped. A secured Kafka is read with the flags of modelserving.kafka_security.flags
(`--command-config FILE` as Kafka's own tools take, and flags over it). Values are plain Avro or in
Confluent's wire format, each as its first byte says; a framed value is read with the writer's
schema fetched by its id from `--schema-registry URL` (modelserving.inferencelog.registry_flags), or
without one with the inferencelog schema. The connection and filter flags are shared with
`modelserving logs export` (`inferencelog.export_cli`), and the filter flags make the query
(`reader_query`).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import replace

from modelserving.inferencelog.dedupe import DEFAULT_WINDOW
from modelserving.inferencelog.query import InferenceLogQuery
from modelserving.inferencelog.reader import ReadProgress, read_inference_log
from modelserving.inferencelog.record import InferenceLogDecodeError
from modelserving.inferencelog.registry_flags import SchemaRegistryFlagError, schema_registry_of
from modelserving.inferencelog.registry_flags import add_arguments as add_registry_arguments
from modelserving.inferencelog.schema_registry import SchemaRegistry
from modelserving.inferencelog.writer_schemas import NeedsSchemaRegistry, SchemaRegistryUnavailable
from modelserving.kafka_security.diagnosis import KafkaRefused
from modelserving.kafka_security.flags import add_arguments, reader_connection
from modelserving.kafka_security.settings import KafkaSecurity, KafkaSecurityError


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("topic", metavar="TOPIC", help="the serving's inference log topic")
    parser.epilog = (
        "To write a time range of the log to a file (JSON lines or Parquet), see "
        "`modelserving logs export --help`."
    )
    add_connection_arguments(parser)
    parser.add_argument(
        "--from-beginning",
        action="store_true",
        help="start at the oldest record kept (default: only records that arrive from now on)",
    )
    parser.add_argument(
        "--follow", action="store_true", help="keep waiting for new records (stop with Ctrl-C)"
    )
    add_filter_arguments(parser)


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    """How a reader reaches the topic and decodes its values: `logs` and `logs export` alike."""
    add_arguments(parser)
    add_registry_arguments(parser)
    parser.add_argument(
        "--confluent",
        action="store_true",
        help="deprecated, no longer needed (each value's first byte tells its framing): every "
        "value must carry Confluent's schema-registry prefix, and a plain Avro one is an error",
    )


def add_filter_arguments(parser: argparse.ArgumentParser) -> None:
    """Which records a reader keeps: `logs` and `logs export` alike."""
    parser.add_argument("--model", metavar="NAME", help="only records of this model name")
    parser.add_argument(
        "--model-version",
        type=int,
        metavar="N",
        help="only records of this model version (the record's modelVersion)",
    )
    parser.add_argument(
        "--status",
        action="append",
        type=status_codes,
        default=[],
        metavar="CODE|Nxx",
        help="only records whose responseHttpCode is CODE (503) or in a class (5xx); "
        "may be repeated",
    )
    parser.add_argument(
        "--key", metavar="REQUEST_ID", help="only the record of this request id (X-Request-Id)"
    )
    parser.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="NAME=VALUE|NAME~TEXT|NAME",
        help="only records whose header NAME is VALUE (caller=team-a), holds TEXT "
        "(payload~cut) or is present (payload); may be repeated",
    )
    parser.add_argument(
        "--dedupe",
        nargs="?",
        type=window_size,
        const=DEFAULT_WINDOW,
        default=0,
        metavar="N",
        help="keep a record only once: drop a record whose key, headers and value repeat one "
        "of the N records seen most recently, as a re-send after a sidecar crash does (N: "
        f"{DEFAULT_WINDOW} when not given, up to 250 bytes each); another record under the same "
        "key (other headers or value) is kept; how many were dropped goes to stderr at the end. "
        "Give it after TOPIC, or as --dedupe=N",
    )


def reader_query(args: argparse.Namespace) -> InferenceLogQuery:
    """The query the shared flags ask for: how values are framed, which records to keep, and
    the copies to drop; each command adds its own flags' part (where to start, a time range)."""
    where, contains = header_filters(args.header)
    return InferenceLogQuery(
        model=args.model,
        model_version=args.model_version,
        status_codes=frozenset().union(*args.status) if args.status else None,
        key=args.key,
        where=where,
        contains=contains,
        confluent=args.confluent,
        dedupe=args.dedupe,
    )


def connection(args: argparse.Namespace) -> tuple[str, KafkaSecurity]:
    """The brokers and security the flags say; a setting that cannot work exits saying why."""
    try:
        return reader_connection(args)
    except KafkaSecurityError as exc:
        raise SystemExit(f"modelserving logs: {exc}") from None


def schema_registry(args: argparse.Namespace) -> SchemaRegistry | None:
    """The registry the flags say, if any; flags that cannot work exit saying why."""
    try:
        return schema_registry_of(args)
    except SchemaRegistryFlagError as exc:
        raise SystemExit(f"modelserving logs: {exc}") from None


def status_codes(text: str) -> frozenset[int]:
    """`--status`: one HTTP status code (503), or a class of them (5xx)."""
    lowered = text.lower()
    if len(lowered) == 3 and lowered[0] in "12345" and lowered[1:] == "xx":
        first = int(lowered[0]) * 100
        return frozenset(range(first, first + 100))
    if len(text) == 3 and text.isdigit() and 100 <= int(text) <= 599:
        return frozenset([int(text)])
    raise argparse.ArgumentTypeError(
        f"{text!r} is not an HTTP status code (100-599) nor a class of them (2xx, 4xx, 5xx)"
    )


def window_size(text: str) -> int:
    """`--dedupe N`: a number of records, at least 1."""
    try:
        size = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of records (give TOPIC before --dedupe, or --dedupe=N)"
        ) from None
    if size < 1:
        raise argparse.ArgumentTypeError(f"the window holds at least 1 record, not {size}")
    return size


def header_filters(pairs: list[str]) -> tuple[dict[str, str], dict[str, str]]:
    """`--header` arguments as (exact values, texts contained): NAME=VALUE, NAME~TEXT, NAME."""
    where: dict[str, str] = {}
    contains: dict[str, str] = {}
    for pair in pairs:
        eq, tilde = pair.find("="), pair.find("~")
        if eq > 0 and (tilde < 0 or eq < tilde):
            where[pair[:eq]] = pair[eq + 1 :]
        elif tilde > 0:
            contains[pair[:tilde]] = pair[tilde + 1 :]
        elif pair and eq < 0 and tilde < 0:
            contains[pair] = ""
        else:
            raise SystemExit(f"--header {pair!r}: expected NAME=VALUE, NAME~TEXT or NAME")
    return where, contains


async def _print_records(args: argparse.Namespace, progress: ReadProgress) -> None:
    query = replace(reader_query(args), from_beginning=args.from_beginning, follow=args.follow)
    servers, security = connection(args)
    registry = schema_registry(args)
    async for logged in read_inference_log(
        args.topic, servers, query, security=security, schema_registry=registry, progress=progress
    ):
        sys.stdout.write(logged.to_json_line() + "\n")
        if args.follow:
            sys.stdout.flush()


def run(args: argparse.Namespace) -> int:
    progress = ReadProgress()
    try:
        asyncio.run(_print_records(args, progress))
    except KeyboardInterrupt:
        pass
    except (KafkaRefused, KafkaSecurityError, SchemaRegistryUnavailable) as exc:
        print(f"modelserving logs: {exc}", file=sys.stderr)
        return 1
    except InferenceLogDecodeError as exc:
        sys.stdout.flush()
        print(f"modelserving logs: {decode_failure(exc)}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # `| head` closed the pipe: stop quietly, as other CLI tools do.
        sys.stderr.close()
        return 0
    if args.dedupe:
        sys.stdout.flush()
        print(duplicates_note(progress.duplicates_dropped, args.dedupe), file=sys.stderr)
    return 0


def decode_failure(exc: InferenceLogDecodeError) -> str:
    """What a value that does not decode says: what is wrong with it, and what to check (a
    framed value the seed's schema cannot read already says to give --schema-registry)."""
    if isinstance(exc, NeedsSchemaRegistry):
        return str(exc)
    return f"{exc} (is the topic an inference log?)"


def duplicates_note(dropped: int, window_size: int) -> str:
    """What `--dedupe` tells on stderr at the end: how many copies it dropped."""
    plural = "" if dropped == 1 else "s"
    return f"--dedupe: {dropped} duplicate record{plural} dropped (window size {window_size})"
