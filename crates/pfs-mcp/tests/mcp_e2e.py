"""End-to-end test of the PanaversityFS MCP server with the official Python `mcp` client.

Run by the Rust integration test (crates/pfs-mcp/tests/it/python_e2e.rs), which starts the real
router on 127.0.0.1 behind a test middleware that takes the caller identity from the headers
`x-test-subject` and `x-test-scopes`, then runs:

    python mcp_e2e.py <base_url> <book_id>

Exit code 0 when every check passed; the last line is "N passed, M failed".
"""

import asyncio
import base64
import hashlib
import io
import json
import sys
import traceback
import zipfile

import httpx2
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

BASE = sys.argv[1].rstrip("/")
BOOK = sys.argv[2]
MCP_URL = BASE + "/mcp"

EXPECTED_TOOLS = {
    "read_content", "write_content", "delete_content", "upload_asset", "get_asset", "list_assets",
    "delete_asset", "list_books", "glob_search", "grep_search", "get_book_archive", "validate_book",
    "delta_build", "plan_build", "query_audit_log", "verify_audit_chain", "edit_content",
    "move_content", "list_versions",
}

PASSED = 0
FAILED = 0


def check(cond, what):
    global PASSED, FAILED
    if cond:
        PASSED += 1
    else:
        FAILED += 1
        print(f"FAIL: {what}", flush=True)


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


class Caller:
    """One MCP session with a fixed identity."""

    def __init__(self, subject, scopes):
        self.headers = {"x-test-subject": subject, "x-test-scopes": scopes}

    async def __aenter__(self):
        self.http = httpx2.AsyncClient(headers=self.headers, timeout=30)
        self._t = streamable_http_client(MCP_URL, http_client=self.http)
        read, write = await self._t.__aenter__()
        self._s = ClientSession(read, write)
        self.session = await self._s.__aenter__()
        self.init = await self.session.initialize()
        return self

    async def __aexit__(self, *exc):
        await self._s.__aexit__(*exc)
        await self._t.__aexit__(*exc)
        await self.http.aclose()

    async def ok(self, tool, args):
        """Call a tool that must succeed; return its JSON (checking text == structuredContent)."""
        r = await self.session.call_tool(tool, args)
        text = r.content[0].text if r.content else ""
        if r.is_error:
            raise AssertionError(f"{tool} failed unexpectedly: {text}")
        body = json.loads(text)
        check(body == r.structured_content, f"{tool}: text content equals structuredContent")
        return body

    async def err(self, tool, args, code):
        """Call a tool that must fail with `code`; return the error object."""
        r = await self.session.call_tool(tool, args)
        text = r.content[0].text if r.content else ""
        check(r.is_error is True, f"{tool}: isError for expected {code} (got {text[:200]})")
        try:
            body = json.loads(text)
        except ValueError:
            check(False, f"{tool}: error text is JSON ({text[:200]})")
            return {}
        got = body.get("error", {}).get("code")
        check(got == code, f"{tool}: expected {code}, got {got}: {text[:300]}")
        check(bool(body.get("error", {}).get("message")), f"{tool}: error has a message")
        return body["error"]


async def main():
    lesson = "content/01-Part/01-Chapter/01-lesson.md"
    text1 = "# Lesson one\n\nHello   world  \n"

    async with Caller("alice", "read write") as alice, Caller("bob", "read") as bob, Caller(
        "root", "admin"
    ) as root:
        # --- initialize + tools/list
        check(alice.init.server_info.name == "panaversity_fs", "server name")
        tools = (await alice.session.list_tools()).tools
        names = {t.name for t in tools}
        check(names == EXPECTED_TOOLS, f"tool set: {sorted(names ^ EXPECTED_TOOLS)}")
        for t in tools:
            check(t.input_schema.get("type") == "object", f"{t.name}: input schema object")
            check(isinstance(t.output_schema, dict) and t.output_schema, f"{t.name}: output schema")
            a = t.annotations
            check(a is not None and a.title, f"{t.name}: annotations with title")
            check(a is not None and a.read_only_hint is not None and a.open_world_hint is not None,
                  f"{t.name}: hints present")
            if a is not None and a.read_only_hint is False:
                check(a.idempotent_hint is not None and a.destructive_hint is not None,
                      f"{t.name}: mutation hints present")
            # Provider-safe: a flat object schema, the legacy wrapped form accepted but not advertised.
            check("params" not in t.input_schema.get("properties", {}), f"{t.name}: wrapped form not advertised")
            check(isinstance(t.input_schema.get("required"), list), f"{t.name}: top-level required")
            for k in ("anyOf", "oneOf", "allOf", "not", "if", "$ref", "$defs", "additionalProperties"):
                check(k not in t.input_schema, f"{t.name}: no {k} at the root")
        by = {t.name: t for t in tools}
        check(by["read_content"].annotations.read_only_hint is True, "read_content readOnly")
        check(by["delete_content"].annotations.destructive_hint is True, "delete_content destructive")
        check(by["write_content"].annotations.title == "Write Content (Upsert)", "write_content title")
        check(by["upload_asset"].annotations.idempotent_hint is False, "upload_asset not idempotent")

        # --- write (flat) / read (wrapped) / read (params as a JSON string)
        w = await alice.ok("write_content", {"book_id": BOOK, "path": lesson, "content": text1})
        check(w["mode"] == "created", "create mode")
        check(w["file_hash"] == sha(text1.encode()), "hash of the exact bytes")
        r = await alice.ok("read_content", {"params": {"book_id": BOOK, "path": lesson}})
        check(r["content"] == text1, "byte-exact content (no whitespace stripping)")
        check(r["file_hash_sha256"] == w["file_hash"], "read hash = write hash")
        check(r["source"] == "base", "source base")
        r2 = await alice.ok("read_content", {"params": json.dumps({"book_id": BOOK, "path": lesson})})
        check(r2["content"] == text1, "params as a JSON string")

        # --- hash protocol
        e = await alice.err("write_content", {"book_id": BOOK, "path": lesson, "content": "x"}, "HASH_REQUIRED")
        check(e.get("current_hash") == w["file_hash"], "HASH_REQUIRED carries current_hash")
        e = await alice.err(
            "write_content",
            {"book_id": BOOK, "path": lesson, "content": "x", "expected_hash": "0" * 64},
            "CONFLICT",
        )
        check(e.get("current_hash") == w["file_hash"], "CONFLICT carries current_hash")
        text2 = text1 + "More.\n"
        u = await alice.ok(
            "write_content",
            {"params": {"book_id": BOOK, "path": lesson, "content": text2, "expected_hash": w["file_hash"]}},
        )
        check(u["mode"] == "updated", "update mode")
        await alice.err(
            "write_content",
            {"book_id": BOOK, "path": "content/01-Part/01-Chapter/09-new.md", "content": "x",
             "expected_hash": "a" * 64},
            "NOT_FOUND",
        )
        await alice.err("read_content", {"book_id": BOOK, "path": "content/01-Part/01-Chapter/09-nope.md"},
                        "NOT_FOUND")

        # --- path security and schema
        await alice.err("read_content", {"book_id": BOOK, "path": "content/../../etc/passwd"}, "INVALID_PATH")
        await alice.err("write_content", {"book_id": BOOK, "path": "content/%2e%2e/x.md", "content": "x"},
                        "INVALID_PATH")
        await alice.err("write_content", {"book_id": BOOK, "path": "/etc/x.md", "content": "x"}, "INVALID_PATH")
        await alice.err("write_content", {"book_id": BOOK, "path": "content/05-Part/17-Chapter/README.md",
                                          "content": "x"}, "SCHEMA_VIOLATION")
        await alice.err("read_content", {"book_id": "NOT VALID", "path": lesson}, "INVALID_INPUT")
        await alice.err("read_content", {"path": lesson}, "INVALID_INPUT")
        await alice.err("read_content", {"book_id": BOOK, "path": lesson, "bogus": 1}, "INVALID_INPUT")

        # --- scopes
        await bob.err("write_content", {"book_id": BOOK, "path": lesson, "content": "x"}, "FORBIDDEN")
        await bob.err("query_audit_log", {}, "FORBIDDEN")

        # --- overlays
        ov_text = "# Alice's notes\n\nsecret-overlay-marker\n"
        o = await alice.ok("write_content", {"book_id": BOOK, "path": lesson, "content": ov_text, "user_id": "alice"})
        check(o["namespace"] == "overlay" and o["mode"] == "created", "overlay create")
        ro = await alice.ok("read_content", {"book_id": BOOK, "path": lesson, "user_id": "alice"})
        check(ro["source"] == "overlay" and ro["content"] == ov_text, "overlay read")
        rb = await alice.ok("read_content", {"book_id": BOOK, "path": lesson})
        check(rb["content"] == text2, "base untouched by the overlay write")
        await bob.err("read_content", {"book_id": BOOK, "path": lesson, "user_id": "alice"}, "FORBIDDEN")
        await alice.err("write_content", {"book_id": BOOK, "path": lesson, "content": "x", "user_id": "bob"},
                        "FORBIDDEN")
        radm = await root.ok("read_content", {"book_id": BOOK, "path": lesson, "user_id": "alice"})
        check(radm["source"] == "overlay", "admin may read any overlay")
        rbob = await bob.ok("read_content", {"book_id": BOOK, "path": lesson, "user_id": "bob"})
        check(rbob["source"] == "base", "no overlay → base")

        # --- search: never another user's overlay
        g = await bob.ok("grep_search", {"book_id": BOOK, "pattern": "secret-overlay-marker"})
        check(g["count"] == 0, "bob's grep does not see alice's overlay")
        g = await alice.ok("grep_search", {"book_id": BOOK, "pattern": "secret-overlay-marker"})
        check(g["count"] == 1 and g["matches"][0]["namespace"] == "overlay", "alice's grep sees her overlay")
        g = await alice.ok("grep_search", {"params": {"book_id": BOOK, "pattern": "Lesson|More", "max_results": 1}})
        check(g["count"] == 1 and g["truncated"] is True, "grep result cap")
        await alice.err("grep_search", {"book_id": BOOK, "pattern": "(unclosed"}, "INVALID_INPUT")
        await bob.err("grep_search", {"book_id": BOOK, "pattern": "x", "user_id": "alice"}, "FORBIDDEN")
        gl = await alice.ok("glob_search", {"book_id": BOOK, "pattern": "content/**/*.md"})
        check(lesson in gl["matches"], "glob returns the book-relative path read_content takes")
        check({"book_id": BOOK, "path": lesson, "namespace": "overlay"} in gl["files"], "glob includes own overlay")
        gb = await bob.ok("glob_search", {"book_id": BOOK, "pattern": "content/**/*.md"})
        check(all(f["namespace"] == "base" for f in gb["files"]), "glob never shows others' overlays")

        # --- bulk read
        bulk = await bob.ok("read_content", {"book_id": BOOK, "path": "content/01-Part", "scope": "part"})
        check(bulk["count"] == 1 and bulk["files"][0]["content"] == text2, "part read (base only for bob)")
        bulk = await alice.ok("read_content", {"book_id": BOOK, "scope": "book", "user_id": "alice"})
        check(bulk["files"][0]["source"] == "overlay", "book read merges own overlay")

        # --- assets
        png = bytes(range(256)) * 8
        up = await alice.ok("upload_asset", {"book_id": BOOK, "asset_type": "images", "filename": "ch1/diagram_1.png",
                                             "binary_data": base64.b64encode(png).decode()})
        check(up["status"] == "success" and up["file_hash_sha256"] == sha(png), "asset upload")
        check(up["path"] == "static/images/ch1/diagram_1.png", "nested asset filename kept")
        check(up["mime_type"] == "image/png", "mime type")
        up2 = await alice.ok("upload_asset", {"book_id": BOOK, "asset_type": "images", "filename": "ch1/diagram_1.png",
                                              "binary_data": base64.b64encode(png).decode()})
        check(up2["status"] == "skipped", "identical re-upload skipped")
        ga = await bob.ok("get_asset", {"book_id": BOOK, "asset_type": "images", "filename": "ch1/diagram_1.png",
                                        "include_binary": True})
        check(base64.b64decode(ga["binary_data"]) == png, "asset bytes round-trip")
        la = await bob.ok("list_assets", {"book_id": BOOK})
        check([a["path"] for a in la["assets"]] == ["static/images/ch1/diagram_1.png"], "list_assets")
        rh = await bob.ok("read_content", {"book_id": BOOK, "path": "static/images/ch1/diagram_1.png"})
        check(rh["exists"] is True and rh["file_hash_sha256"] == sha(png), "asset-hash mode")
        big = b"\0" * (70 * 1024)
        await alice.err("upload_asset", {"book_id": BOOK, "asset_type": "images", "filename": "big.png",
                                         "binary_data": base64.b64encode(big).decode()}, "PAYLOAD_TOO_LARGE")
        await alice.err("upload_asset", {"book_id": BOOK, "asset_type": "images", "filename": "../x.png",
                                         "binary_data": "AAAA"}, "INVALID_PATH")
        await alice.err("upload_asset", {"book_id": BOOK, "asset_type": "images", "filename": "x.png",
                                         "binary_data": "***not base64***"}, "INVALID_INPUT")
        await bob.err("get_asset", {"book_id": BOOK, "asset_type": "slides", "filename": "none.pdf"}, "NOT_FOUND")
        await alice.ok("upload_asset", {"book_id": BOOK, "asset_type": "slides", "filename": "deck.pdf",
                                        "binary_data": base64.b64encode(b"%PDF-1.4 tiny").decode()})
        da = await alice.ok("delete_asset", {"book_id": BOOK, "asset_type": "slides", "filename": "deck.pdf"})
        check(da["existed"] is True, "delete_asset existed")
        da = await alice.ok("delete_asset", {"book_id": BOOK, "asset_type": "slides", "filename": "deck.pdf"})
        check(da["existed"] is False, "delete_asset idempotent")

        # --- books, validation, builds
        lb = await bob.ok("list_books", {"include_structure": "all"})
        book = [b for b in lb["books"] if b["book_id"] == BOOK]
        check(len(book) == 1, "list_books has the book")
        if book:
            parts = book[0]["content"]["parts"]
            check(parts and parts[0]["id"] == "01-Part", "content tree")
            check(book[0]["assets"]["images"] == ["ch1/diagram_1.png"], "asset tree")
        lb = await bob.ok("list_books", {"params": {}})
        check(lb["count"] >= 1, "list_books with empty params")
        v = await bob.ok("validate_book", {"book_id": BOOK})
        check(v["valid"] is True and v["summary"]["content_files"] >= 1, f"validate_book {v}")
        d = await bob.ok("delta_build", {"book_id": BOOK, "since": "2000-01-01T00:00:00Z"})
        check(d["changed_count"] >= 2, "delta_build lists changes")
        await bob.err("delta_build", {"book_id": BOOK, "since": "yesterday"}, "INVALID_INPUT")
        p1 = await bob.ok("plan_build", {"book_id": BOOK})
        check(p1["status"] == "changed" and p1["total_files"] == 2, f"plan_build full {p1}")
        p2 = await bob.ok("plan_build", {"book_id": BOOK, "target_manifest_hash": p1["manifest_hash"]})
        check(p2["status"] == "unchanged" and p2["files"] == [], "plan_build unchanged")
        text3 = text2 + "Third.\n"
        await alice.ok("write_content", {"book_id": BOOK, "path": lesson, "content": text3,
                                         "expected_hash": u["file_hash"]})
        p3 = await bob.ok("plan_build", {"book_id": BOOK, "target_manifest_hash": p1["manifest_hash"]})
        check(p3["status"] == "changed" and [f["change_type"] for f in p3["files"]] == ["modified"],
              f"plan_build modified {p3}")
        plans = await asyncio.gather(*[bob.ok("plan_build", {"book_id": BOOK}) for _ in range(8)])
        check(len({p["manifest_hash"] for p in plans}) == 1, "concurrent plan_build agree")

        # --- archive via the signed URL
        a = await bob.ok("get_book_archive", {"book_id": BOOK, "scope": "all"})
        check(a["file_count"] == 2, f"archive counts {a}")
        async with httpx2.AsyncClient(timeout=30) as anon:
            resp = await anon.get(a["archive_url"])
            check(resp.status_code == 200, f"archive download status {resp.status_code}")
            check("attachment" in resp.headers.get("content-disposition", ""), "content-disposition")
            etag = resp.headers.get("etag")
            check(bool(etag), "etag")
            zf = zipfile.ZipFile(io.BytesIO(resp.content))
            check(sorted(zf.namelist()) == sorted([lesson, "static/images/ch1/diagram_1.png"]), f"zip entries {zf.namelist()}")
            check(zf.read(lesson).decode() == text3, "zip content is base")
            check(zf.read("static/images/ch1/diagram_1.png") == png, "zip asset bytes")
            resp2 = await anon.get(a["archive_url"])
            check(resp2.content == resp.content and resp2.headers.get("etag") == etag, "deterministic archive")
            bad = a["archive_url"].replace("scope=all", "scope=content")
            resp3 = await anon.get(bad)
            check(resp3.status_code == 403, f"tampered signed URL refused ({resp3.status_code})")
            resp4 = await anon.get(f"{BASE}/books/{BOOK}/archive?scope=content")
            check(resp4.status_code == 401, f"unsigned anonymous archive refused ({resp4.status_code})")
        ao = await alice.ok("get_book_archive", {"book_id": BOOK, "scope": "content", "user_id": "alice"})
        async with httpx2.AsyncClient(timeout=30) as anon:
            zf = zipfile.ZipFile(io.BytesIO((await anon.get(ao["archive_url"])).content))
            check(zf.read(lesson).decode() == ov_text, "overlay archive has the overlay copy")
        await bob.err("get_book_archive", {"book_id": BOOK, "user_id": "alice"}, "FORBIDDEN")

        # --- deletes
        dc = await alice.ok("delete_content", {"book_id": BOOK, "path": lesson, "user_id": "alice"})
        check(dc["existed"] is True and dc["namespace"] == "overlay", "overlay delete")
        rb = await alice.ok("read_content", {"book_id": BOOK, "path": lesson, "user_id": "alice"})
        check(rb["source"] == "base", "after overlay delete, base shows through")
        dc = await alice.ok("delete_content", {"book_id": BOOK, "path": lesson, "user_id": "alice"})
        check(dc["existed"] is False, "idempotent delete")

        # --- revisions: edit, conflict diff, versions, read by version, move
        page = "content/01-Part/01-Chapter/05-revise.md"
        h1 = (await alice.ok("write_content", {"book_id": BOOK, "path": page, "content": "a\nb\nc\n"}))["file_hash"]
        ed = await alice.ok("edit_content", {"book_id": BOOK, "path": page, "expected_hash": h1,
                                             "edits": [{"old_text": "b", "new_text": "B"}]})
        check(ed["mode"] == "updated" and "-b\n+B\n" in ed["diff"], f"edit_content diff: {ed}")
        ce = await alice.err("edit_content", {"book_id": BOOK, "path": page, "expected_hash": h1,
                                              "edits": [{"old_text": "a", "new_text": "A"}]}, "CONFLICT")
        check(ce.get("current_hash") == ed["file_hash"] and "+B" in ce.get("diff", ""), "conflict diff")
        await alice.err("edit_content", {"book_id": BOOK, "path": page, "expected_hash": ed["file_hash"],
                                         "edits": [{"old_text": "zzz", "new_text": "y"}]}, "EDIT_NO_MATCH")
        lv = await alice.ok("list_versions", {"book_id": BOOK, "path": page})
        check([v["sha256"] for v in lv["versions"]] == [ed["file_hash"], h1], f"list_versions: {lv}")
        old = await alice.ok("read_content", {"book_id": BOOK, "path": page, "version": h1})
        check(old["content"] == "a\nb\nc\n" and old["is_current"] is False, "read by version")
        moved = "content/01-Part/01-Chapter/06-revised.md"
        mv = await alice.ok("move_content", {"book_id": BOOK, "from_path": page, "to_path": moved,
                                             "expected_hash": ed["file_hash"]})
        check(mv["to_path"] == moved, "move_content")
        retry = {"book_id": BOOK, "path": moved, "content": "retried\n", "expected_hash": ed["file_hash"],
                 "request_id": "py-retry-1"}
        r1 = await alice.ok("write_content", retry)
        r2 = await alice.ok("write_content", retry)
        check(r2.get("replayed") is True and r2["file_hash"] == r1["file_hash"], f"replayed retry: {r2}")
        await alice.err("write_content", {**retry, "content": "other\n"}, "REQUEST_ID_REUSED")
        lv = await alice.ok("list_versions", {"book_id": BOOK, "path": moved})
        check([v["operation"] for v in lv["versions"]] == ["write_content", "move_content", "write_content",
                                                         "write_content"],
              f"history follows the move: {lv}")

        # --- audit
        q = await root.ok("query_audit_log", {"agent_id": "alice", "operation": "write_content", "limit": 2})
        check(len(q["rows"]) == 2 and all(r["agent_id"] == "alice" for r in q["rows"]), "audit query")
        check(q["next_cursor"] is not None, "audit pagination cursor")
        q2 = await root.ok("query_audit_log", {"params": {"agent_id": "alice", "operation": "write_content",
                                                         "limit": 2, "cursor": q["next_cursor"]}})
        check(len(q2["rows"]) >= 1 and q2["rows"][0]["seq"] < q["rows"][-1]["seq"], "audit next page")
        vr = await root.ok("verify_audit_chain", {})
        check(vr["valid"] is True and vr["rows_checked"] >= 5, f"audit chain valid {vr}")
        vf = await root.ok("verify_audit_chain", {"book_id": BOOK, "path": lesson})
        check(vf["valid"] is True, "per-file chain valid")


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except Exception:  # noqa: BLE001 - report and fail
        traceback.print_exc()
        FAILED += 1
    print(f"{PASSED} passed, {FAILED} failed", flush=True)
    sys.exit(1 if FAILED else 0)
