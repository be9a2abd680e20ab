"""Which partition a record goes to: by its key, as Kafka's Java client and aiokafka's default
partitioner choose, so the records of one request id stay together whoever produced them."""

from __future__ import annotations

import random
import struct


def partition_of(key: bytes | None, partitions: list[int]) -> int:
    """The partition Kafka's default partitioner picks for a key (murmur2, as the Java client
    and aiokafka do)."""
    if key is None:
        return random.choice(partitions)
    return partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 of a key, the same as aiokafka.partitioner.murmur2 (words unpacked at
    once: it runs per record on multi-partition topics)."""
    m, mask = 0x5BD1E995, 0xFFFFFFFF
    length = len(data)
    h = 0x9747B28C ^ length
    words = length // 4
    for k in struct.unpack_from(f"<{words}I", data):
        k = (k * m) & mask
        k ^= k >> 24
        k = (k * m) & mask
        h = ((h * m) & mask) ^ k
    rest = length & 3
    tail = words * 4
    if rest >= 3:
        h ^= data[tail + 2] << 16
    if rest >= 2:
        h ^= data[tail + 1] << 8
    if rest >= 1:
        h ^= data[tail]
        h = (h * m) & mask
    h ^= h >> 13
    h = (h * m) & mask
    h ^= h >> 15
    return h
