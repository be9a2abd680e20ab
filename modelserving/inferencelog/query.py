"""What a read of the inference log asks for: which records (a model, a version, status codes,
header values, a request id, a time range) and how to read them (from where, until when, how
values must be framed, whether copies re-sent after a crash are dropped). One frozen
`InferenceLogQuery`, handed to `read_inference_log` with the topic and the connection.

Reading from the newest record, every record::

    InferenceLogQuery()

A data team's question, "the 5xx answers of mnist version 2 in the last hour, each once"::

    InferenceLogQuery(model="mnist", model_version=2, status_codes=range(500, 600),
                      since_ms=now_ms - 3_600_000, until_ms=now_ms, dedupe=100_000)
"""

from __future__ import annotations

from collections.abc import Container, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from modelserving.inferencelog.reader import LoggedInference


@dataclass(frozen=True, slots=True)
class InferenceLogQuery:
    """Which records a read of the log keeps (None: any) and how it reads the topic.

    Which records:
    - `model`, `model_version`: one model's records, one version's (the record's modelName and
      modelVersion); `status_codes`: those whose responseHttpCode is in it.
    - `key`: only the record(s) of one request id.
    - `where`: records whose headers have the given values (`{HEADER_CALLER: "team-a"}`);
      `contains`: those whose headers hold the given text (`{HEADER_PAYLOAD: "cut"}`; an empty
      text asks only that the header be there).
    - `since_ms` (inclusive) and `until_ms` (exclusive): a range of the record's
      requestTimestamp. It is read from where the broker says it starts (offsets for times; a
      Kafka timestamp is never earlier than the requestTimestamp it carries, so none in range
      lies before), not from the topic's start. Kafka's order is the order records arrived:
      records re-sent after a sidecar crash or held in the spool through a broker outage
      arrive late, so the read goes on past `until_ms` up to the first record stamped
      `allowed_lateness_ms` after it (or the end the topic had when the read started) and
      keeps those in range.

    How to read:
    - `from_beginning`: from the oldest record kept; otherwise only what arrives from now on.
    - `follow`: keep waiting for new records; otherwise stop at the end the topic had when the
      read started. A read that follows has no end: it takes no `until_ms`.
    - `confluent`: every value must carry Confluent's schema-registry prefix (a plain Avro value
      is an error); otherwise each value's first byte tells which framing it has.
    - `topic_must_exist`: a topic the cluster does not have raises `TopicNotFoundError`
      (otherwise such a read yields nothing).
    - `dedupe`: drop the copies an at-least-once pipeline re-sends after a crash: a record with
      the same key, headers and value (byte for byte) as one of the `dedupe` records seen most
      recently is skipped (0: every record is yielded). A record under a key already seen but
      with other headers or another value (a shadow version's answer to the same request) is
      not a copy and is yielded. Each remembered record costs up to 250 bytes (25 MB for
      100,000), never its payloads. One window serves all partitions: a re-sent record keeps
      its key, so it lands in the partition of its first copy, and the read reads them all. The
      window holds only records the filters keep (a copy is kept or filtered out as its first
      copy was). The read's `ReadProgress` counts the copies it dropped.
    """

    model: str | None = None
    model_version: int | None = None
    status_codes: Container[int] | None = None
    key: str | None = None
    where: Mapping[str, str] | None = None
    contains: Mapping[str, str] | None = None
    since_ms: int | None = None
    until_ms: int | None = None
    allowed_lateness_ms: int = 0
    from_beginning: bool = False
    follow: bool = False
    confluent: bool = False
    topic_must_exist: bool = False
    dedupe: int = 0

    def __post_init__(self) -> None:
        if self.follow and self.until_ms is not None:
            raise ValueError("a read that follows the topic has no end: until_ms cannot be given")
        if self.dedupe < 0:
            raise ValueError(f"a duplicate window holds at least 1 record, not {self.dedupe}")

    def keeps(self, logged: LoggedInference) -> bool:
        """Whether a record read from the topic is one the query asks for."""
        record = logged.record
        if self.model is not None and record.model_name != self.model:
            return False
        if self.model_version is not None and record.model_version != self.model_version:
            return False
        if self.status_codes is not None and record.response_http_code not in self.status_codes:
            return False
        if self.since_ms is not None and record.request_timestamp < self.since_ms:
            return False
        if self.until_ms is not None and record.request_timestamp >= self.until_ms:
            return False
        if self.key is not None and logged.key != self.key:
            return False
        headers = logged.headers
        if self.where and not all(headers.get(k) == v for k, v in self.where.items()):
            return False
        return not self.contains or all(
            k in headers and v in headers[k] for k, v in self.contains.items()
        )
