#!/usr/bin/env python3
"""Writes the seed corpus of each fuzz target into DIR/<target>/ (run.sh
calls it; nothing binary is checked in). Every input is a scenario (the
targets read bytes as choices), so seeds matter most where a choice cannot
reach: well-formed frames, whose CRC-32 the fuzzer would have to guess.
The layouts are those of src/store/embedded/record.rs and journal/mod.rs;
zlib.crc32 is the same CRC-32 (IEEE) as the store's."""
import base64
import hashlib
import hmac
import json
import pathlib
import struct
import sys
import time
import zlib

# src/http/auth/fuzzing.rs: the secret of the token target's verifier.
TOKEN_SECRET = b"the-fuzzing-secret-of-at-least-32-bytes"


def frame(body):
    return struct.pack("<II", len(body), zlib.crc32(body)) + body


def record(seq, data, event_type=None):
    body = struct.pack("<Qq", seq, 1_700_000_000_000)
    body += bytes([1 if event_type else 0])
    if event_type:
        body += bytes([len(event_type)]) + event_type
    return frame(body + data)


def journal_record(generation, topic, epoch, base, offset, data):
    body = struct.pack("<QH", generation, len(topic)) + topic
    body += struct.pack("<H", len(epoch)) + epoch
    return frame(body + struct.pack("<QQ", base, offset) + data)


def seeds():
    r1, r2 = record(1, b"first event"), record(2, b"second", b"type-1")
    # segment: a first byte divisible by 4 feeds the rest to the decoder as
    # raw bytes (after a byte for resync's lowest sequence); any other
    # picks a segment scenario (base, sealed, count, events, damage).
    yield "segment", "raw-record", b"\x00\x01" + r1
    yield "segment", "raw-damaged", b"\x00\x01" + r1[:-1] + b"\xff" + r2
    yield "segment", "active-5", b"\x01\x00\x00\x04\x00" + b"\x01\x00\x10\x07" * 5
    yield "segment", "sealed-damaged", (
        b"\x01\x00\x01\x09\x00" + b"\x02\x07\x20\x03\x01\x01\x01" * 9 + b"\x03\x02\x01\x80\x00"
    )
    # topic_dir: several segments, damage, a second round.
    yield "topic_dir", "three-segments", b"\x00\x04\x01\x01\x1e\x00" + b"\x01\x00\x30\x05" * 30 + b"\x03" * 16
    yield "topic_dir", "start-500", b"\x40\x00\x00\xf4\x01\x0a\x00" + b"\x00" * 64
    # journal: 5 logs' choices (record count, second segment), then the
    # mode; 0 = the rest is the journal file as it is.
    logs = b"\x00\x00\x00" * 5
    good = b"SLJ1" + struct.pack("<Q", 1)
    good += journal_record(1, b"t", b"journalt", 1, 0, r1)
    good += journal_record(1, b"u", b"journalu", 1, 0, r1 + r2)
    good += journal_record(0, b"t", b"journalt", 1, 0, b"old generation")
    yield "journal", "raw-valid", logs + b"\x00" + good + b"\x00" * 32
    yield "journal", "raw-escape", logs + b"\x00" + b"SLJ1" + struct.pack("<Q", 1) + journal_record(
        1, b"../../outside/t", b"outsidex", 1, 0, r1
    )
    yield "journal", "structured", logs + b"\x01\x02\x03" + b"\x02\x00\x00\x01\x00\x00\x01\x05" * 3

    # The targets of what a client sends. cursor: even first byte = text.
    cursor = b"20240520T103022.123Z-000000000000002a-k3f9x2ab"
    yield "cursor", "text", b"\x00" + cursor
    yield "cursor", "built", b"\x01" + bytes(range(40))
    # batch: even first byte = a raw body, odd = events built from choices.
    yield "batch", "raw", b"\x00" + b'{"data":"a"}\r\n\n{"data":{"b": [1, 2.5]},"type":"t","idempotency_key":"k"}\n'
    yield "batch", "raw-bad", b"\x00" + b'{"data":"a"}\n{"data":"\\u00e9","extra":1}\n'
    yield "batch", "built", b"\x01" + b"\x01\x03\x00\x01\x00" * 6
    yield "sse", "events", bytes(range(1, 200))
    yield "headers", "some", b"\x01\x00\x00\x01\x03\x00\x01\x01\x05\x00\x01\x04\x15\x00\x03"
    # token: first byte % 4 == 0 = a token as text; 1 = a query; else built.
    yield "token", "valid", b"\x00" + token({"exp": int(time.time()) + 10 * 365 * 86400,
                                              "sluice": {"publish": ["orders.*"], "subscribe": ["*"]}})
    yield "token", "query", b"\x01" + b"a=1&access_token=x.y.z&access%5Ftoken=2&from=earliest"
    yield "token", "built", b"\x02" + bytes(range(64))


def token(claims):
    b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=")
    signing_input = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + b"." + b64(json.dumps(claims).encode())
    return signing_input + b"." + b64(hmac.new(TOKEN_SECRET, signing_input, hashlib.sha256).digest())


def main():
    out = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "corpus")
    for target, name, data in seeds():
        d = out / target
        d.mkdir(parents=True, exist_ok=True)
        (d / f"seed-{name}").write_bytes(data)


if __name__ == "__main__":
    main()
