// A small client for this server's ChatKit endpoint (POST /chatkit): JSON requests, and
// streaming requests whose Server-Sent Events are read as they arrive (fetch + ReadableStream).
// No DOM here; the page (study.js) decides what to show. Exposes window.StudyChatKit.
(function () {
  "use strict";

  /** An answer other than 2xx, with the server's {"error":{"code","message"}} when present. */
  class ChatKitError extends Error {
    constructor(status, code, message, retryAfter) {
      super(message || "Request failed (" + status + ")");
      this.name = "ChatKitError";
      this.status = status;
      this.code = code || "HTTP_" + status;
      this.retryAfter = retryAfter;
    }
  }

  function newKey() {
    if (window.crypto && typeof window.crypto.randomUUID === "function") {
      return window.crypto.randomUUID();
    }
    return "k-" + Date.now().toString(36) + "-" + Math.random().toString(36).slice(2);
  }

  async function errorOf(resp) {
    let code;
    let message;
    try {
      const body = await resp.json();
      const e = body && (body.error || body.detail);
      if (e && typeof e === "object") {
        code = e.code;
        message = e.message;
      } else if (typeof e === "string") {
        message = e;
      }
    } catch (_) {
      // not JSON
    }
    const ra = Number(resp.headers.get("retry-after"));
    return new ChatKitError(resp.status, code, message, Number.isFinite(ra) && ra > 0 ? ra : undefined);
  }

  /**
   * Parse an SSE body into events: yields the JSON of each `data:` frame, in order, as soon as
   * the frame is complete.
   */
  async function* readEvents(resp) {
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let buf = "";
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
        let end;
        while ((end = buf.indexOf("\n\n")) >= 0) {
          const frame = buf.slice(0, end);
          buf = buf.slice(end + 2);
          const data = frame
            .split("\n")
            .filter((l) => l.startsWith("data:"))
            .map((l) => l.slice(5).replace(/^ /, ""))
            .join("\n");
          if (data) yield JSON.parse(data);
        }
      }
    } finally {
      reader.releaseLock();
    }
  }

  /**
   * A client. `headers()` gives the identity headers of each request (Authorization, or
   * X-User-ID in dev mode); `query()` the frontend parameters the server reads from the URL
   * (lesson_path, selected_text, user_name).
   */
  function createClient(opts) {
    const url = (opts && opts.url) || "/chatkit";
    const headers = (opts && opts.headers) || (() => ({}));

    function endpoint(query) {
      const q = new URLSearchParams();
      for (const [k, v] of Object.entries(query || {})) {
        if (v !== undefined && v !== null && v !== "") q.set(k, v);
      }
      const s = q.toString();
      return s ? url + "?" + s : url;
    }

    async function post(type, params, options) {
      const o = options || {};
      const h = Object.assign({ "Content-Type": "application/json" }, headers());
      if (o.idempotent) h["Idempotency-Key"] = newKey();
      const resp = await fetch(endpoint(o.query), {
        method: "POST",
        headers: h,
        body: JSON.stringify({ type, params: params || {} }),
        signal: o.signal,
        cache: "no-store",
      });
      if (!resp.ok) throw await errorOf(resp);
      return resp;
    }

    return {
      /** A non-streaming request: its JSON answer. */
      async request(type, params, options) {
        const resp = await post(type, params, options);
        return resp.json();
      },
      /** A streaming request: an async iterator of its events. */
      async *stream(type, params, options) {
        const resp = await post(type, params, options);
        const ctype = resp.headers.get("content-type") || "";
        if (!ctype.startsWith("text/event-stream")) {
          throw new ChatKitError(resp.status, "NOT_A_STREAM", "The server did not answer with a stream.");
        }
        yield* readEvents(resp);
      },
    };
  }

  window.StudyChatKit = { createClient, ChatKitError, readEvents };
})();
