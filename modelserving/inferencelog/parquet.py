"""The inference log as Parquet: the typed columns of an export file, and the writer (arro3,
Arrow's Rust implementation, in one small adapter).

One row per record, the columns in the order and under the names of a `logs` JSON line: the
seven Avro fields (ints as int32, requestTimestamp as a UTC millisecond timestamp, payloads as
strings), then the Kafka key, headers, topic, partition, offset and the Kafka timestamp.
Headers are a list of (key, value) structs in the order the record carries them, the shape
Spark's Kafka source gives them (`filter(headers, h -> h.key = 'caller')[0].value`); a list
keeps Kafka's order and a name given twice, which a map would not (and arro3 builds no map
column from Python values).

Why arro3 and not pyarrow: 34 MB installed against pyarrow's 170 MB (fastparquet with pandas
and numpy 178 MB, polars 181 MB, duckdb 69 MB), and as fast for this: 10,000 records of the log
(30-float requests, five headers) written as zstd Parquet in 0.26-0.39 s against pyarrow's
0.29-0.32 s (best of 7, two runs on a busy 2-core machine; medians 0.29-0.52 s and 0.44-0.58
s), the same 3.0 MB file; the import takes 3 ms against 83 ms. It has no incremental
writer: `write_parquet` pulls the record batches from an iterator, which the export feeds from
its Kafka read.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from arro3.core import (
    Array,
    DataType,
    Field,
    RecordBatch,
    RecordBatchReader,
    Schema,
    list_array,
    struct_array,
)
from arro3.io import write_parquet

from modelserving.inferencelog.reader import LoggedInference

# Rows per row group: a row group is held in memory until it is written, so this bounds the
# writer's memory (some 50 MB of compressed columns for records of a few KB) while leaving
# row groups large enough for readers to skip by their statistics.
ROW_GROUP_ROWS = 16_384
# The codec of the topic's default compression: small files, fast to write and to read.
COMPRESSION = "zstd(3)"

_TIMESTAMP = DataType.timestamp("ms", tz="UTC")
_HEADER_FIELDS = [
    Field("key", DataType.string(), nullable=False),
    Field("value", DataType.string(), nullable=False),
]
_HEADER_ENTRY = Field("item", DataType.struct(_HEADER_FIELDS), nullable=False)
_HEADERS = DataType.list(_HEADER_ENTRY)

SCHEMA = Schema(
    [
        Field("modelId", DataType.int32(), nullable=False),
        Field("modelName", DataType.string(), nullable=False),
        Field("modelVersion", DataType.int32(), nullable=False),
        Field("requestTimestamp", _TIMESTAMP, nullable=False),
        Field("responseHttpCode", DataType.int32(), nullable=False),
        Field("inferenceRequest", DataType.string(), nullable=False),
        Field("inferenceResponse", DataType.string(), nullable=False),
        Field("key", DataType.string(), nullable=True),
        Field("headers", _HEADERS, nullable=False),
        Field("topic", DataType.string(), nullable=False),
        Field("partition", DataType.int32(), nullable=False),
        Field("offset", DataType.int64(), nullable=False),
        Field("timestamp", _TIMESTAMP, nullable=False),
    ]
)


def record_batch(records: Sequence[LoggedInference]) -> RecordBatch:
    """The records as one Arrow record batch of `SCHEMA`."""
    avro = [logged.record for logged in records]
    offsets = [0]
    names: list[str] = []
    values: list[str] = []
    for logged in records:
        names.extend(logged.headers)
        values.extend(logged.headers.values())
        offsets.append(len(names))
    entries = struct_array(
        [Array(names, type=DataType.string()), Array(values, type=DataType.string())],
        fields=_HEADER_FIELDS,
    )
    columns = [
        Array([r.model_id for r in avro], type=DataType.int32()),
        Array([r.model_name for r in avro], type=DataType.string()),
        Array([r.model_version for r in avro], type=DataType.int32()),
        _timestamps([r.request_timestamp for r in avro]),
        Array([r.response_http_code for r in avro], type=DataType.int32()),
        Array([r.inference_request for r in avro], type=DataType.string()),
        Array([r.inference_response for r in avro], type=DataType.string()),
        Array([logged.key for logged in records], type=DataType.string()),
        list_array(Array(offsets, type=DataType.int32()), entries, type=_HEADERS),
        Array([logged.topic for logged in records], type=DataType.string()),
        Array([logged.partition for logged in records], type=DataType.int32()),
        Array([logged.offset for logged in records], type=DataType.int64()),
        _timestamps([logged.timestamp_ms for logged in records]),
    ]
    return RecordBatch.from_arrays(columns, schema=SCHEMA)


def _timestamps(ms: list[int]) -> Array:
    # arro3 builds no timestamp array from Python values: milliseconds as int64, then cast.
    return Array(ms, type=DataType.int64()).cast(_TIMESTAMP)


def write_records(batches: Iterable[Sequence[LoggedInference]], path: Path) -> None:
    """Write the records to a Parquet file at `path`, pulling one batch at a time."""
    arrow_batches: Iterator[RecordBatch] = (record_batch(b) for b in batches if b)
    write_parquet(
        RecordBatchReader.from_batches(SCHEMA, arrow_batches),
        str(path),
        compression=COMPRESSION,
        max_row_group_size=ROW_GROUP_ROWS,
        created_by="modelserving logs export",
    )
