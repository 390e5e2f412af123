// End-to-end test of the PanaversityFS MCP server with the official TypeScript MCP SDK client
// (@modelcontextprotocol/sdk, pinned in package.json).
//
// Run by the Rust integration test (crates/pfs-mcp/tests/it/ts_e2e.rs), which starts the real
// router on 127.0.0.1 behind a test middleware that takes the caller identity from the headers
// `x-test-subject` and `x-test-scopes`, then runs:
//
//     node mcp_e2e.mjs <base_url> <book_id>
//
// The SDK does the validation a real TypeScript client does: `listTools()` parses the tool list
// with the SDK's zod schemas (a malformed list throws), and `callTool()` validates every
// `structuredContent` against the tool's advertised `outputSchema` (Ajv).
//
// Every tool the server advertises must be called successfully at least once below, else the run
// fails. To cover a new tool, add a section (or a few lines in one) calling `ok(...)`/`err(...)`.
//
// Exit code 0 when every check passed; the last line is "N passed, M failed".

import { createHash } from "node:crypto";
import { isDeepStrictEqual } from "node:util";
import { inflateRawSync } from "node:zlib";

import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const BASE = (process.argv[2] ?? "").replace(/\/+$/, "");
const BOOK = process.argv[3];
if (!BASE || !BOOK) {
  console.error("usage: node mcp_e2e.mjs <base_url> <book_id>");
  process.exit(2);
}
const MCP_URL = new URL(BASE + "/mcp");

let PASSED = 0;
let FAILED = 0;
/** Tools called with a successful, schema-validated result. */
const SUCCEEDED = new Set();

function check(cond, what) {
  if (cond) {
    PASSED += 1;
  } else {
    FAILED += 1;
    console.log(`FAIL: ${what}`);
  }
}

// The SDK and its Ajv validator report what they tolerate but do not understand (e.g. an unknown
// `format` in an output schema: "unknown format … ignored") with console.warn; count it as a failure.
for (const level of ["warn", "error"]) {
  const orig = console[level].bind(console);
  console[level] = (...args) => {
    FAILED += 1;
    orig(...args);
    console.log(`FAIL: console.${level} from the client: ${args.map(String).join(" ")}`);
  };
}

const sha = (bytes) => createHash("sha256").update(bytes).digest("hex");
const b64 = (bytes) => Buffer.from(bytes).toString("base64");
const short = (s, n = 300) => (s.length > n ? s.slice(0, n) + "…" : s);

/** One MCP client with a fixed identity. */
class Caller {
  constructor(subject, scopes) {
    this.subject = subject;
    this.client = new Client({ name: "pfs-ts-e2e", version: "1.0.0" });
    this.transport = new StreamableHTTPClientTransport(MCP_URL, {
      requestInit: { headers: { "x-test-subject": subject, "x-test-scopes": scopes } },
    });
    // Transport errors outside a request (e.g. the optional GET stream the SDK opens after
    // `initialized`; 405 is the accepted "no stream") only reach this callback.
    this.client.onerror = (e) => {
      if (!this.closing) check(false, `${subject}: client error: ${e?.stack ?? e}`);
    };
  }

  async connect() {
    await this.client.connect(this.transport);
    // Caches the output-schema validators callTool uses (the SDK also does this lazily).
    this.tools = (await this.client.listTools()).tools;
    return this;
  }

  async close() {
    this.closing = true;
    await this.client.close();
  }

  async call(tool, args) {
    const r = await this.client.callTool({ name: tool, arguments: args });
    const text = r.content?.[0]?.type === "text" ? r.content[0].text : "";
    return { r, text };
  }

  /** Call a tool that must succeed; return its JSON (checking text == structuredContent). */
  async ok(tool, args) {
    const { r, text } = await this.call(tool, args);
    if (r.isError) {
      throw new Error(`${tool} failed unexpectedly: ${short(text)}`);
    }
    check(
      r.structuredContent !== undefined && r.structuredContent !== null,
      `${tool}: structuredContent present`,
    );
    const body = JSON.parse(text);
    check(isDeepStrictEqual(body, r.structuredContent), `${tool}: text content equals structuredContent`);
    SUCCEEDED.add(tool);
    return body;
  }

  /** Call a tool that must fail with `code`; return the error object. */
  async err(tool, args, code) {
    const { r, text } = await this.call(tool, args);
    check(r.isError === true, `${tool}: isError for expected ${code} (got ${short(text, 200)})`);
    let body;
    try {
      body = JSON.parse(text);
    } catch {
      check(false, `${tool}: error text is JSON (${short(text, 200)})`);
      return {};
    }
    const got = body?.error?.code;
    check(got === code, `${tool}: expected ${code}, got ${got}: ${short(text)}`);
    check(Boolean(body?.error?.message), `${tool}: error has a message`);
    return body.error ?? {};
  }
}

/** Run one section; an exception fails it (and is reported) without stopping the others. */
async function section(name, fn) {
  try {
    await fn();
  } catch (e) {
    FAILED += 1;
    console.log(`FAIL: section "${name}" threw: ${e?.stack ?? e}`);
  }
}

/** The entries of a ZIP archive (stored or deflated, ZIP64 sizes/offsets understood). */
function unzip(buf) {
  let eocd = -1;
  for (let i = buf.length - 22; i >= Math.max(0, buf.length - 22 - 65535); i--) {
    if (buf.readUInt32LE(i) === 0x06054b50) {
      eocd = i;
      break;
    }
  }
  if (eocd < 0) throw new Error("zip: no end of central directory");
  let count = buf.readUInt16LE(eocd + 10);
  let cd = buf.readUInt32LE(eocd + 16);
  const loc64 = eocd - 20;
  if (loc64 >= 0 && buf.readUInt32LE(loc64) === 0x07064b50) {
    const eocd64 = Number(buf.readBigUInt64LE(loc64 + 8));
    count = Number(buf.readBigUInt64LE(eocd64 + 32));
    cd = Number(buf.readBigUInt64LE(eocd64 + 48));
  }
  const out = new Map();
  for (let n = 0, p = cd; n < count; n++) {
    if (buf.readUInt32LE(p) !== 0x02014b50) throw new Error("zip: bad central directory entry");
    const method = buf.readUInt16LE(p + 10);
    let csize = buf.readUInt32LE(p + 20);
    let usize = buf.readUInt32LE(p + 24);
    const nameLen = buf.readUInt16LE(p + 28);
    const extraLen = buf.readUInt16LE(p + 30);
    const commentLen = buf.readUInt16LE(p + 32);
    let local = buf.readUInt32LE(p + 42);
    const name = buf.toString("utf8", p + 46, p + 46 + nameLen);
    // ZIP64 extended information: the 0xFFFFFFFF fields, in order usize, csize, offset.
    for (let e = p + 46 + nameLen; e < p + 46 + nameLen + extraLen; ) {
      const id = buf.readUInt16LE(e);
      const len = buf.readUInt16LE(e + 2);
      if (id === 0x0001) {
        let q = e + 4;
        if (usize === 0xffffffff) (usize = Number(buf.readBigUInt64LE(q))), (q += 8);
        if (csize === 0xffffffff) (csize = Number(buf.readBigUInt64LE(q))), (q += 8);
        if (local === 0xffffffff) local = Number(buf.readBigUInt64LE(q));
      }
      e += 4 + len;
    }
    if (buf.readUInt32LE(local) !== 0x04034b50) throw new Error(`zip: bad local header for ${name}`);
    const start = local + 30 + buf.readUInt16LE(local + 26) + buf.readUInt16LE(local + 28);
    const raw = buf.subarray(start, start + csize);
    let data;
    if (method === 0) data = Buffer.from(raw);
    else if (method === 8) data = inflateRawSync(raw);
    else throw new Error(`zip: unsupported method ${method} for ${name}`);
    if (data.length !== usize) throw new Error(`zip: ${name} is ${data.length} bytes, expected ${usize}`);
    out.set(name, data);
    p += 46 + nameLen + extraLen + commentLen;
  }
  return out;
}

async function main() {
  const lesson = "content/01-Part/01-Chapter/01-lesson.md";
  const text1 = "# Lesson one\n\nHello   world  \n";
  const text2 = text1 + "More.\n";
  const text3 = text2 + "Third.\n";
  const ovText = "# Alice's notes\n\nsecret-overlay-marker\n";
  const png = Buffer.from(Array.from({ length: 256 * 8 }, (_, i) => i % 256));
  const pngPath = "static/images/ch1/diagram_1.png";

  const alice = await new Caller("alice", "read write").connect();
  const bob = await new Caller("bob", "read").connect();
  const root = await new Caller("root", "admin").connect();
  const advertised = alice.tools.map((t) => t.name);
  // Filled by the sections, read by later ones.
  let w;
  let u;
  let p1;

  try {
    await section("initialize + tools/list", async () => {
      const info = alice.client.getServerVersion();
      check(info?.name === "panaversity_fs", `server name (${info?.name})`);
      check(Boolean(alice.client.getServerCapabilities()?.tools), "tools capability");
      check(isDeepStrictEqual(await alice.client.ping(), {}), "ping");
      check(advertised.length > 0, "tools/list is not empty");
      check(new Set(advertised).size === advertised.length, "tool names are unique");
      for (const t of alice.tools) {
        const s = t.inputSchema;
        check(s?.type === "object", `${t.name}: input schema type object`);
        check(
          s?.properties !== null && typeof s?.properties === "object" && !Array.isArray(s.properties),
          `${t.name}: input schema has properties`,
        );
        check(Array.isArray(s?.required), `${t.name}: top-level required`);
        check(!("params" in (s?.properties ?? {})), `${t.name}: wrapped form not advertised`);
        for (const k of ["anyOf", "oneOf", "allOf", "not", "if", "$ref", "$defs", "additionalProperties"]) {
          check(!(k in s), `${t.name}: no ${k} at the root`);
        }
        check(t.outputSchema?.type === "object", `${t.name}: output schema is an object schema`);
        // callTool validates structuredContent only for tools with a cached validator.
        check(
          typeof alice.client.getToolOutputValidator(t.name) === "function",
          `${t.name}: the SDK validates its structuredContent`,
        );
        const a = t.annotations;
        check(Boolean(a?.title), `${t.name}: annotations with title`);
        check(
          typeof a?.readOnlyHint === "boolean" && typeof a?.openWorldHint === "boolean",
          `${t.name}: hints present`,
        );
        if (a?.readOnlyHint === false) {
          check(
            typeof a?.destructiveHint === "boolean" && typeof a?.idempotentHint === "boolean",
            `${t.name}: mutation hints present`,
          );
        }
      }
      const by = Object.fromEntries(alice.tools.map((t) => [t.name, t]));
      check(by.read_content?.annotations?.readOnlyHint === true, "read_content readOnly");
      check(by.delete_content?.annotations?.destructiveHint === true, "delete_content destructive");
      check(by.write_content?.annotations?.title === "Write Content (Upsert)", "write_content title");
      check(by.upload_asset?.annotations?.idempotentHint === false, "upload_asset not idempotent");
      // The output validation is live: a result of the wrong shape is refused.
      const v = alice.client.getToolOutputValidator("write_content");
      check(
        v !== undefined && v({ file_size: "large" }).valid === false,
        "output validator rejects a mistyped write_content result",
      );
    });

    await section("write / read (flat, wrapped, params as a JSON string)", async () => {
      w = await alice.ok("write_content", { book_id: BOOK, path: lesson, content: text1 });
      check(w.mode === "created", "create mode");
      check(w.file_hash === sha(text1), "hash of the exact bytes");
      const r = await alice.ok("read_content", { params: { book_id: BOOK, path: lesson } });
      check(r.content === text1, "byte-exact content (no whitespace stripping)");
      check(r.file_hash_sha256 === w.file_hash, "read hash = write hash");
      check(r.source === "base", "source base");
      const r2 = await alice.ok("read_content", { params: JSON.stringify({ book_id: BOOK, path: lesson }) });
      check(r2.content === text1, "params as a JSON string");
    });

    await section("hash protocol", async () => {
      let e = await alice.err("write_content", { book_id: BOOK, path: lesson, content: "x" }, "HASH_REQUIRED");
      check(e.current_hash === w.file_hash, "HASH_REQUIRED carries current_hash");
      e = await alice.err(
        "write_content",
        { book_id: BOOK, path: lesson, content: "x", expected_hash: "0".repeat(64) },
        "CONFLICT",
      );
      check(e.current_hash === w.file_hash, "CONFLICT carries current_hash");
      u = await alice.ok("write_content", {
        params: { book_id: BOOK, path: lesson, content: text2, expected_hash: w.file_hash },
      });
      check(u.mode === "updated", "update mode");
      check(u.prev_hash === w.file_hash, "update carries prev_hash");
      await alice.err(
        "write_content",
        { book_id: BOOK, path: "content/01-Part/01-Chapter/09-new.md", content: "x", expected_hash: "a".repeat(64) },
        "NOT_FOUND",
      );
      await alice.err("read_content", { book_id: BOOK, path: "content/01-Part/01-Chapter/09-nope.md" }, "NOT_FOUND");
    });

    await section("path security and argument checks", async () => {
      await alice.err("read_content", { book_id: BOOK, path: "content/../../etc/passwd" }, "INVALID_PATH");
      await alice.err("write_content", { book_id: BOOK, path: "content/%2e%2e/x.md", content: "x" }, "INVALID_PATH");
      await alice.err("write_content", { book_id: BOOK, path: "/etc/x.md", content: "x" }, "INVALID_PATH");
      await alice.err(
        "write_content",
        { book_id: BOOK, path: "content/05-Part/17-Chapter/README.md", content: "x" },
        "SCHEMA_VIOLATION",
      );
      await alice.err("read_content", { book_id: "NOT VALID", path: lesson }, "INVALID_INPUT");
      await alice.err("read_content", { path: lesson }, "INVALID_INPUT");
      await alice.err("read_content", { book_id: BOOK, path: lesson, bogus: 1 }, "INVALID_INPUT");
    });

    await section("scopes", async () => {
      await bob.err("write_content", { book_id: BOOK, path: lesson, content: "x" }, "FORBIDDEN");
      await bob.err("query_audit_log", {}, "FORBIDDEN");
    });

    await section("overlays", async () => {
      const o = await alice.ok("write_content", { book_id: BOOK, path: lesson, content: ovText, user_id: "alice" });
      check(o.namespace === "overlay" && o.mode === "created", "overlay create");
      const ro = await alice.ok("read_content", { book_id: BOOK, path: lesson, user_id: "alice" });
      check(ro.source === "overlay" && ro.content === ovText, "overlay read");
      const rb = await alice.ok("read_content", { book_id: BOOK, path: lesson });
      check(rb.content === text2, "base untouched by the overlay write");
      await bob.err("read_content", { book_id: BOOK, path: lesson, user_id: "alice" }, "FORBIDDEN");
      await alice.err("write_content", { book_id: BOOK, path: lesson, content: "x", user_id: "bob" }, "FORBIDDEN");
      const radm = await root.ok("read_content", { book_id: BOOK, path: lesson, user_id: "alice" });
      check(radm.source === "overlay", "admin may read any overlay");
      const rbob = await bob.ok("read_content", { book_id: BOOK, path: lesson, user_id: "bob" });
      check(rbob.source === "base", "no overlay → base");
    });

    await section("grep_search / glob_search", async () => {
      let g = await bob.ok("grep_search", { book_id: BOOK, pattern: "secret-overlay-marker" });
      check(g.count === 0, "bob's grep does not see alice's overlay");
      g = await alice.ok("grep_search", { book_id: BOOK, pattern: "secret-overlay-marker" });
      check(g.count === 1 && g.matches[0]?.namespace === "overlay", "alice's grep sees her overlay");
      check(g.matches[0]?.path === lesson, "grep returns the book-relative path read_content takes");
      g = await alice.ok("grep_search", { params: { book_id: BOOK, pattern: "Lesson|More", max_results: 1 } });
      check(g.count === 1 && g.truncated === true, "grep result cap");
      await alice.err("grep_search", { book_id: BOOK, pattern: "(unclosed" }, "INVALID_INPUT");
      await bob.err("grep_search", { book_id: BOOK, pattern: "x", user_id: "alice" }, "FORBIDDEN");
      const gl = await alice.ok("glob_search", { book_id: BOOK, pattern: "content/**/*.md" });
      check(gl.matches.includes(lesson), "glob returns the book-relative path read_content takes");
      check(
        gl.files.some((f) => isDeepStrictEqual(f, { book_id: BOOK, path: lesson, namespace: "overlay" })),
        "glob includes own overlay",
      );
      const gb = await bob.ok("glob_search", { book_id: BOOK, pattern: "content/**/*.md" });
      check(gb.files.length >= 1 && gb.files.every((f) => f.namespace === "base"), "glob never shows others' overlays");
    });

    await section("bulk read", async () => {
      let bulk = await bob.ok("read_content", { book_id: BOOK, path: "content/01-Part", scope: "part" });
      check(bulk.count === 1 && bulk.files[0]?.content === text2, "part read (base only for bob)");
      bulk = await alice.ok("read_content", { book_id: BOOK, scope: "book", user_id: "alice" });
      check(bulk.files[0]?.source === "overlay", "book read merges own overlay");
    });

    await section("assets", async () => {
      const asset = { book_id: BOOK, asset_type: "images", filename: "ch1/diagram_1.png" };
      const up = await alice.ok("upload_asset", { ...asset, binary_data: b64(png) });
      check(up.status === "success" && up.file_hash_sha256 === sha(png), "asset upload");
      check(up.path === pngPath, "nested asset filename kept");
      check(up.mime_type === "image/png", "mime type");
      const up2 = await alice.ok("upload_asset", { ...asset, binary_data: b64(png) });
      check(up2.status === "skipped", "identical re-upload skipped");
      const ga = await bob.ok("get_asset", { ...asset, include_binary: true });
      check(Buffer.from(ga.binary_data ?? "", "base64").equals(png), "asset bytes round-trip");
      const la = await bob.ok("list_assets", { book_id: BOOK });
      check(isDeepStrictEqual(la.assets.map((a) => a.path), [pngPath]), "list_assets");
      const rh = await bob.ok("read_content", { book_id: BOOK, path: pngPath });
      check(rh.exists === true && rh.file_hash_sha256 === sha(png), "asset-hash mode");
      const big = Buffer.alloc(70 * 1024);
      await alice.err(
        "upload_asset",
        { book_id: BOOK, asset_type: "images", filename: "big.png", binary_data: b64(big) },
        "PAYLOAD_TOO_LARGE",
      );
      await alice.err(
        "upload_asset",
        { book_id: BOOK, asset_type: "images", filename: "../x.png", binary_data: "AAAA" },
        "INVALID_PATH",
      );
      await alice.err(
        "upload_asset",
        { book_id: BOOK, asset_type: "images", filename: "x.png", binary_data: "***not base64***" },
        "INVALID_INPUT",
      );
      await bob.err("get_asset", { book_id: BOOK, asset_type: "slides", filename: "none.pdf" }, "NOT_FOUND");
      const deck = { book_id: BOOK, asset_type: "slides", filename: "deck.pdf" };
      await alice.ok("upload_asset", { ...deck, binary_data: b64("%PDF-1.4 tiny") });
      let da = await alice.ok("delete_asset", deck);
      check(da.existed === true, "delete_asset existed");
      da = await alice.ok("delete_asset", deck);
      check(da.existed === false, "delete_asset idempotent");
    });

    await section("list_books / validate_book / delta_build / plan_build", async () => {
      let lb = await bob.ok("list_books", { include_structure: "all" });
      const book = lb.books.filter((b) => b.book_id === BOOK);
      check(book.length === 1, "list_books has the book");
      if (book.length === 1) {
        const parts = book[0].content?.parts ?? [];
        check(parts[0]?.id === "01-Part", "content tree");
        check(isDeepStrictEqual(book[0].assets?.images, ["ch1/diagram_1.png"]), "asset tree");
      }
      lb = await bob.ok("list_books", { params: {} });
      check(lb.count >= 1, "list_books with empty params");
      const v = await bob.ok("validate_book", { book_id: BOOK });
      check(v.valid === true && v.summary.content_files >= 1, `validate_book ${JSON.stringify(v)}`);
      const d = await bob.ok("delta_build", { book_id: BOOK, since: "2000-01-01T00:00:00Z" });
      check(d.changed_count >= 2, "delta_build lists changes");
      await bob.err("delta_build", { book_id: BOOK, since: "yesterday" }, "INVALID_INPUT");
      p1 = await bob.ok("plan_build", { book_id: BOOK });
      check(p1.status === "changed" && p1.total_files === 2, `plan_build full ${JSON.stringify(p1)}`);
      const p2 = await bob.ok("plan_build", { book_id: BOOK, target_manifest_hash: p1.manifest_hash });
      check(p2.status === "unchanged" && p2.files.length === 0, "plan_build unchanged");
      await alice.ok("write_content", { book_id: BOOK, path: lesson, content: text3, expected_hash: u.file_hash });
      const p3 = await bob.ok("plan_build", { book_id: BOOK, target_manifest_hash: p1.manifest_hash });
      check(
        p3.status === "changed" && isDeepStrictEqual(p3.files.map((f) => f.change_type), ["modified"]),
        `plan_build modified ${JSON.stringify(p3)}`,
      );
      const plans = await Promise.all(Array.from({ length: 8 }, () => bob.ok("plan_build", { book_id: BOOK })));
      check(new Set(plans.map((p) => p.manifest_hash)).size === 1, "concurrent plan_build agree");
    });

    await section("get_book_archive (signed URL download)", async () => {
      const a = await bob.ok("get_book_archive", { book_id: BOOK, scope: "all" });
      check(a.file_count === 2, `archive counts ${JSON.stringify(a)}`);
      const resp = await fetch(a.archive_url);
      check(resp.status === 200, `archive download status ${resp.status}`);
      check((resp.headers.get("content-disposition") ?? "").includes("attachment"), "content-disposition");
      const etag = resp.headers.get("etag");
      check(Boolean(etag), "etag");
      const zipBytes = Buffer.from(await resp.arrayBuffer());
      const zf = unzip(zipBytes);
      check(
        isDeepStrictEqual([...zf.keys()].sort(), [lesson, pngPath].sort()),
        `zip entries ${JSON.stringify([...zf.keys()])}`,
      );
      check(zf.get(lesson)?.toString("utf8") === text3, "zip content is base");
      check(zf.get(pngPath)?.equals(png) === true, "zip asset bytes");
      const resp2 = await fetch(a.archive_url);
      const again = Buffer.from(await resp2.arrayBuffer());
      check(again.equals(zipBytes) && resp2.headers.get("etag") === etag, "deterministic archive");
      const resp3 = await fetch(a.archive_url.replace("scope=all", "scope=content"));
      await resp3.arrayBuffer();
      check(resp3.status === 403, `tampered signed URL refused (${resp3.status})`);
      const resp4 = await fetch(`${BASE}/books/${BOOK}/archive?scope=content`);
      await resp4.arrayBuffer();
      check(resp4.status === 401, `unsigned anonymous archive refused (${resp4.status})`);
      const ao = await alice.ok("get_book_archive", { book_id: BOOK, scope: "content", user_id: "alice" });
      const zo = unzip(Buffer.from(await (await fetch(ao.archive_url)).arrayBuffer()));
      check(zo.get(lesson)?.toString("utf8") === ovText, "overlay archive has the overlay copy");
      await bob.err("get_book_archive", { book_id: BOOK, user_id: "alice" }, "FORBIDDEN");
    });

    // The remaining argument branches: each result shape is validated by the SDK too.
    await section("more result shapes", async () => {
      const ch = await bob.ok("read_content", { book_id: BOOK, path: "content/01-Part/01-Chapter", scope: "chapter" });
      check(ch.count === 1 && ch.files[0]?.path === lesson, "chapter read");
      const li = await bob.ok("list_assets", { book_id: BOOK, asset_type: "images" });
      check(li.count === 1, "list_assets by type");
      const ls = await bob.ok("list_assets", { book_id: BOOK, asset_type: "slides" });
      check(ls.count === 0 && ls.assets.length === 0, "list_assets empty type");
      const lb = await bob.ok("list_books", { book_id: BOOK, include_structure: "content" });
      check(
        lb.count === 1 && Boolean(lb.books[0]?.content) && lb.books[0].assets === undefined,
        "list_books one book, content only",
      );
      const ga = await bob.ok("get_asset", { book_id: BOOK, asset_type: "images", filename: "ch1/diagram_1.png" });
      check(ga.binary_data === undefined && ga.file_size === png.length, "get_asset metadata only");
      const gl = await alice.ok("glob_search", { book_id: BOOK, pattern: "*/content/**/*.md", all_books: true });
      check(gl.matches.includes(`${BOOK}/${lesson}`), `glob all_books ${JSON.stringify(gl.matches)}`);
      const gr = await alice.ok("grep_search", { book_id: BOOK, pattern: "Third", all_books: true });
      check(gr.count === 1 && gr.matches[0]?.book_id === BOOK, "grep all_books");
      const d = await alice.ok("delta_build", {
        book_id: BOOK, since: "2000-01-01T00:00:00Z", include_content: true, user_id: "alice",
      });
      check(d.overlay_changes >= 1 && d.base_changes >= 2, `delta_build with overlay ${JSON.stringify(d)}`);
      const ov = d.changed_files.find((f) => f.user_id === "alice");
      check(ov?.content === ovText, "delta_build overlay content");
      check(Boolean(d.changed_files.find((f) => f.path === pngPath)?.error), "delta_build binary has an error note");
      const vs = await bob.ok("validate_book", { book_id: BOOK, strict: true, include_warnings: true });
      check(typeof vs.valid === "boolean" && Array.isArray(vs.warnings), "validate_book strict with warnings");
      const ar = await bob.ok("get_book_archive", { book_id: BOOK, scope: "all", start_after: lesson });
      check(ar.archive_url.includes("start_after="), "archive resume URL");
      const rz = unzip(Buffer.from(await (await fetch(ar.archive_url)).arrayBuffer()));
      check(isDeepStrictEqual([...rz.keys()], [pngPath]), `resumed archive has only later paths ${[...rz.keys()]}`);
      const q = await root.ok("query_audit_log", {
        book_id: BOOK, path_pattern: "static/*", status: "success", since: "2000-01-01T00:00:00Z", limit: 50,
      });
      check(q.rows.length >= 1 && q.rows.every((r) => r.path.startsWith("static/") && r.status === "success"),
        "audit query by book, path pattern and status");
      const vo = await root.ok("verify_audit_chain", { book_id: BOOK, path: lesson, user_id: "alice" });
      check(vo.valid === true && vo.breaks.length === 0, "overlay file chain valid");
      await alice.err("upload_asset", { book_id: BOOK, asset_type: "images", filename: "p.png", file_size: 10 },
        "INVALID_INPUT");
    });

    await section("delete_content", async () => {
      let dc = await alice.ok("delete_content", { book_id: BOOK, path: lesson, user_id: "alice" });
      check(dc.existed === true && dc.namespace === "overlay", "overlay delete");
      const rb = await alice.ok("read_content", { book_id: BOOK, path: lesson, user_id: "alice" });
      check(rb.source === "base", "after overlay delete, base shows through");
      dc = await alice.ok("delete_content", { book_id: BOOK, path: lesson, user_id: "alice" });
      check(dc.existed === false, "idempotent delete");
    });

    await section("edit_content / list_versions / read by version / move_content", async () => {
      const page = "content/01-Part/01-Chapter/05-revise.md";
      const h1 = (await alice.ok("write_content", { book_id: BOOK, path: page, content: "a\nb\nc\n" })).file_hash;
      const ed = await alice.ok("edit_content", {
        book_id: BOOK, path: page, expected_hash: h1, edits: [{ old_text: "b", new_text: "B" }],
      });
      check(ed.mode === "updated" && ed.diff.includes("-b\n+B\n"), `edit_content diff: ${JSON.stringify(ed)}`);
      const ce = await alice.err("edit_content", {
        book_id: BOOK, path: page, expected_hash: h1, edits: [{ old_text: "a", new_text: "A" }],
      }, "CONFLICT");
      check(ce.current_hash === ed.file_hash && String(ce.diff).includes("+B"), "conflict carries a diff");
      await alice.err("edit_content", {
        book_id: BOOK, path: page, expected_hash: ed.file_hash,
        edits: [{ old_text: "c", new_text: "x" }, { old_text: "c", new_text: "y" }],
      }, "EDIT_NO_MATCH");
      const lv = await alice.ok("list_versions", { book_id: BOOK, path: page, limit: 1 });
      check(lv.versions.length === 1 && lv.versions[0].sha256 === ed.file_hash && lv.next_cursor,
        `list_versions page: ${JSON.stringify(lv)}`);
      const lv2 = await alice.ok("list_versions", { book_id: BOOK, path: page, cursor: lv.next_cursor });
      check(lv2.versions.map((v) => v.sha256).join() === h1, "list_versions next page");
      const old = await alice.ok("read_content", { book_id: BOOK, path: page, version: h1 });
      check(old.content === "a\nb\nc\n" && old.is_current === false, "read by version");
      const moved = "content/01-Part/01-Chapter/06-revised.md";
      const mv = await alice.ok("move_content", {
        book_id: BOOK, from_path: page, to_path: moved, expected_hash: ed.file_hash,
      });
      check(mv.to_path === moved && mv.file_hash === ed.file_hash, "move_content");
      await alice.err("move_content", {
        book_id: BOOK, from_path: moved, to_path: lesson, expected_hash: ed.file_hash,
      }, "ALREADY_EXISTS");
      // A retry with the same request_id answers the first outcome without writing again.
      const retry = { book_id: BOOK, path: moved, content: "retried\n", expected_hash: ed.file_hash,
        request_id: "ts-retry-1" };
      const r1 = await alice.ok("write_content", retry);
      const r2 = await alice.ok("write_content", retry);
      check(r2.replayed === true && r2.file_hash === r1.file_hash, `replayed retry: ${JSON.stringify(r2)}`);
      await alice.err("write_content", { ...retry, content: "other\n" }, "REQUEST_ID_REUSED");
      const back = await alice.ok("write_content", {
        book_id: BOOK, path: moved, content: "a\nB\nc\n", expected_hash: r1.file_hash,
      });
      check(back.file_hash === ed.file_hash, "content restored");
      const hist = await alice.ok("list_versions", { book_id: BOOK, path: moved, limit: 3 });
      check(hist.versions.slice(2).map((v) => v.operation).join() === "move_content",
        `history follows the move: ${JSON.stringify(hist)}`);
    });

    await section("query_audit_log / verify_audit_chain", async () => {
      const q = await root.ok("query_audit_log", { agent_id: "alice", operation: "write_content", limit: 2 });
      check(q.rows.length === 2 && q.rows.every((r) => r.agent_id === "alice"), "audit query");
      check(q.next_cursor !== undefined && q.next_cursor !== null, "audit pagination cursor");
      const q2 = await root.ok("query_audit_log", {
        params: { agent_id: "alice", operation: "write_content", limit: 2, cursor: q.next_cursor },
      });
      check(q2.rows.length >= 1 && q2.rows[0].seq < q.rows.at(-1).seq, "audit next page");
      const vr = await root.ok("verify_audit_chain", {});
      check(vr.valid === true && vr.rows_checked >= 5, `audit chain valid ${JSON.stringify(vr)}`);
      const vf = await root.ok("verify_audit_chain", { book_id: BOOK, path: lesson });
      check(vf.valid === true, "per-file chain valid");
    });

    // New tools: add a section above that calls them; this fails until one does.
    for (const name of advertised) {
      check(SUCCEEDED.has(name), `${name} is advertised but the script never called it successfully`);
    }
  } finally {
    await Promise.allSettled([alice.close(), bob.close(), root.close()]);
  }
}

try {
  await main();
} catch (e) {
  FAILED += 1;
  console.log(`FAIL: ${e?.stack ?? e}`);
}
console.log(`${PASSED} passed, ${FAILED} failed`);
process.exitCode = FAILED ? 1 : 0;
