"""Schemathesis hooks for Sluice (run.sh sets SCHEMATHESIS_HOOKS=hooks).

- application/x-ndjson: the batch body is described as an array of line
  objects; it goes on the wire as NDJSON, one JSON object a line. A value
  that is not an array (a negative case) goes as its JSON text.
- Producer-Id and Producer-Seq: a case with one of them gets the other
  (valid), since the API takes both or neither, which OpenAPI cannot say.
- Content-Encoding: gzip: a body sent with that header is gzip-compressed,
  as the header says (schemathesis cannot know it; a plain body under it is
  a 400 for being no gzip, which says nothing about the schema).
- The SSE variant of GET /v1/topics/{topic}/events is left out: a stream is
  answered at once but never ends, and schemathesis reads a whole body
  before it checks an answer, so every such case would end in its request
  timeout. A case that asks for the stream (`stream=sse`, or an Accept
  naming text/event-stream) is sent as the history poll it otherwise is.
  The stream is covered by tests/it (headers, frames, resumes) and by the
  `sse` fuzz target (framing read back through the client's parser).
"""
import gzip
import json

import schemathesis
from schemathesis.core import NotSet


def _ndjson(value):
    if isinstance(value, list):
        return "".join(json.dumps(line) + "\n" for line in value).encode()
    return json.dumps(value).encode()


@schemathesis.serializer("application/x-ndjson")
def ndjson(ctx, value):
    return _ndjson(value)


def _body_bytes(case):
    body = case.body
    if isinstance(body, NotSet):
        return b""
    media = (case.media_type or "").lower()
    if "x-ndjson" in media:
        return _ndjson(body)
    if isinstance(body, bytes):
        return body
    if isinstance(body, str) and "json" not in media:
        return body.encode()
    return json.dumps(body).encode()


def _is_sse(value):
    if isinstance(value, (list, tuple)):
        return any(_is_sse(v) for v in value)
    return isinstance(value, str) and value.lower() == "sse"


@schemathesis.hook
def before_call(ctx, case, kwargs):
    # `kwargs` (not `**kwargs`): the request's own arguments, so that a
    # body put there is the one sent.
    headers = case.headers or {}
    names = {n.lower(): n for n in headers}
    # Producer-Id and Producer-Seq go together (a lone one is 400), which
    # OpenAPI cannot say: a lone one gets a valid partner.
    if "producer-id" in names and "producer-seq" not in names:
        case.headers["Producer-Seq"] = "1"
    if "producer-seq" in names and "producer-id" not in names:
        case.headers["Producer-Id"] = "p"
    if case.query and _is_sse(case.query.get("stream")):
        case.query = {k: v for k, v in case.query.items() if k != "stream"}
    for name in list(case.headers or {}):
        value = str(case.headers[name])
        if name.lower() == "accept" and "event-stream" in value.lower():
            case.headers[name] = "application/json"
        if name.lower() == "content-encoding" and value.strip().lower() in ("gzip", "x-gzip"):
            kwargs["data"] = gzip.compress(_body_bytes(case))
