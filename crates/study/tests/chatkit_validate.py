#!/usr/bin/env python3
"""Validate captured ChatKit responses with the real `openai-chatkit` pydantic types.

Input (a file given as argv[1], or stdin): one JSON document per line,
    {"kind": "event" | "thread" | "threads_page" | "items_page" | "item" | "empty", "raw": "<exact bytes>"}
where `raw` is the exact JSON text the server sent (an SSE frame without `data: ` and the blank
line, or a JSON response body).

Each document is parsed with the matching type (ThreadStreamEvent, Thread, Page[Thread],
Page[ThreadItem], ThreadItem) and then dumped back the way the SDK serializes
(`by_alias=True, exclude_none=True`). The dump must equal what we sent (timestamps compared as
instants), so unknown fields, nulls the SDK would omit and wrong shapes all fail.

Exit status: 0 when every line validates, 1 otherwise (each failure is printed), 3 when the
`chatkit` package is missing.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone

try:
    from pydantic import TypeAdapter
    from chatkit.types import Page, Thread, ThreadItem, ThreadStreamEvent
except ImportError as exc:  # pragma: no cover - environment check
    print(f"openai-chatkit is not installed: {exc}", file=sys.stderr)
    sys.exit(3)

ADAPTERS = {
    "event": TypeAdapter(ThreadStreamEvent),
    "thread": TypeAdapter(Thread),
    "threads_page": TypeAdapter(Page[Thread]),
    "items_page": TypeAdapter(Page[ThreadItem]),
    "item": TypeAdapter(ThreadItem),
}

TIME_KEYS = {"created_at"}


def normalize(value, key=None):
    """Make timestamps comparable as instants; leave everything else as is."""
    if isinstance(value, dict):
        return {k: normalize(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [normalize(v) for v in value]
    if key in TIME_KEYS and isinstance(value, str):
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=timezone.utc)
        return dt.astimezone(timezone.utc).isoformat()
    return value


def check(kind: str, raw: str) -> str | None:
    if kind == "empty":
        return None if json.loads(raw) == {} else f"expected {{}}, got {raw}"
    adapter = ADAPTERS.get(kind)
    if adapter is None:
        return f"unknown kind {kind!r}"
    try:
        parsed = adapter.validate_json(raw)
    except Exception as exc:  # pydantic.ValidationError and JSON errors
        return f"does not validate as {kind}: {exc}"
    dumped = adapter.dump_python(parsed, mode="json", by_alias=True, exclude_none=True)
    sent = json.loads(raw)
    if normalize(dumped) != normalize(sent):
        return (
            f"round trip differs for {kind}:\n  sent:   {json.dumps(sent, sort_keys=True)}\n"
            f"  chatkit: {json.dumps(dumped, sort_keys=True)}"
        )
    return None


def main() -> int:
    stream = open(sys.argv[1], encoding="utf-8") if len(sys.argv) > 1 else sys.stdin
    failures = 0
    total = 0
    kinds: dict[str, int] = {}
    for lineno, line in enumerate(stream, 1):
        line = line.strip()
        if not line:
            continue
        total += 1
        doc = json.loads(line)
        kind = doc["kind"]
        kinds[kind] = kinds.get(kind, 0) + 1
        err = check(kind, doc["raw"])
        if err:
            failures += 1
            print(f"line {lineno}: {err}\n  raw: {doc['raw']}", file=sys.stderr)
    print(f"validated {total} documents {kinds}: {failures} failures")
    return 1 if failures or total == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
