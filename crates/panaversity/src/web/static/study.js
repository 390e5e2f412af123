// Panaversity Study: the page's behaviour. Signs in (a bearer token, or a dev-mode student id),
// shows the reader's own view of the lesson, and runs the tutor panel over POST /chatkit
// (chatkit.js): Teach / Ask, streamed answers, history (open, rename, delete), stop, retry,
// feedback, notices and errors, questions about selected text, and re-attaching to a reply
// that was still being written when the page was reloaded.
(function () {
  "use strict";

  const $ = (sel, root) => (root || document).querySelector(sel);
  const $$ = (sel, root) => Array.from((root || document).querySelectorAll(sel));

  /** An element with attributes and children (strings become text, never HTML). */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") el.className = v;
      else if (k === "text") el.textContent = v;
      else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) {
      if (c === undefined || c === null || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  function storage(s) {
    return {
      get(k) {
        try { return s.getItem(k); } catch (_) { return null; }
      },
      set(k, v) {
        try { s.setItem(k, v); } catch (_) { /* private mode */ }
      },
      del(k) {
        try { s.removeItem(k); } catch (_) { /* private mode */ }
      },
    };
  }
  const local = storage(window.localStorage);
  const session = storage(window.sessionStorage);
  const KEY = { token: "pv.token", devUser: "pv.devUser", devName: "pv.devName", mode: "pv.mode" };

  const body = document.body;
  const cfg = {
    dev: body.dataset.auth === "dev",
    book: body.dataset.book || "",
    lesson: body.dataset.lesson || "",
    tutorLesson: body.dataset.tutorLesson || "",
    tutorBook: body.dataset.tutorBook || "",
    tutor: body.dataset.tutor === "on",
  };
  const DEV_ID = /^[A-Za-z0-9_.@:-]{1,128}$/;
  const MAX_SELECTION = 1200;

  // ------------------------------------------------------------------ identity

  /** Who the requests speak for: a bearer token, or in dev mode the chosen student. */
  function identityHeaders() {
    const hdrs = {};
    if (cfg.dev) {
      const u = local.get(KEY.devUser);
      if (u && DEV_ID.test(u)) hdrs["X-User-ID"] = u;
    } else {
      const t = local.get(KEY.token);
      if (t) hdrs.Authorization = "Bearer " + t;
    }
    return hdrs;
  }

  function userName() {
    return cfg.dev ? local.get(KEY.devName) || "" : "";
  }

  async function getJSON(url) {
    const resp = await fetch(url, { headers: identityHeaders(), cache: "no-store" });
    let data = null;
    try { data = await resp.json(); } catch (_) { /* empty */ }
    if (!resp.ok && !(data && data.fingerprint)) {
      const e = new Error((data && data.error && data.error.message) || "HTTP " + resp.status);
      e.status = resp.status;
      throw e;
    }
    return data;
  }

  let signedIn = false;

  async function refreshWho() {
    const el = $("#pv-who-text");
    const btn = $("#pv-account-btn");
    if (!cfg.dev && !local.get(KEY.token)) {
      signedIn = false;
      el.textContent = "Not signed in";
      $("#pv-account-current").textContent = "";
      btn.textContent = "Sign in";
      return false;
    }
    try {
      const me = await getJSON("/learn-api/me");
      signedIn = true;
      const name = userName() || me.name;
      const who = name ? [h("strong", { text: name }), " (" + me.user_id + ")"] : [h("strong", { text: me.user_id })];
      el.replaceChildren(cfg.dev ? "Studying as " : "Signed in as ", ...who, cfg.dev ? " · dev mode" : "");
      $("#pv-account-current").textContent = el.textContent + ".";
      btn.textContent = cfg.dev ? "Change student" : "Account";
      return true;
    } catch (e) {
      signedIn = false;
      el.textContent = e.status === 401 ? "Sign-in needed: the token was not accepted" : "The server did not answer";
      $("#pv-account-current").textContent = el.textContent + ".";
      btn.textContent = "Sign in";
      return false;
    }
  }

  function setupAccount() {
    const btn = $("#pv-account-btn");
    const panel = $("#pv-account");
    const form = $("#pv-account-form");
    const err = $("#pv-account-error");
    if (!btn || !panel || !form) return;
    const open = () => {
      panel.hidden = false;
      btn.setAttribute("aria-expanded", "true");
      err.textContent = "";
      if (cfg.dev) {
        $("#pv-dev-user").value = local.get(KEY.devUser) || "";
        $("#pv-dev-name").value = local.get(KEY.devName) || "";
        $("#pv-dev-user").focus();
      } else {
        $("#pv-token").value = local.get(KEY.token) || "";
        $("#pv-token").focus();
      }
    };
    const close = () => {
      panel.hidden = true;
      btn.setAttribute("aria-expanded", "false");
      btn.focus();
    };
    btn.addEventListener("click", () => (panel.hidden ? open() : close()));
    $("#pv-account-cancel").addEventListener("click", close);
    panel.addEventListener("keydown", (e) => {
      if (e.key === "Escape") close();
    });
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      if (cfg.dev) {
        const u = $("#pv-dev-user").value.trim();
        if (u && !DEV_ID.test(u)) {
          err.textContent = "A student ID is 1 to 128 letters, digits or _ . @ : -";
          $("#pv-dev-user").focus();
          return;
        }
        u ? local.set(KEY.devUser, u) : local.del(KEY.devUser);
        const n = $("#pv-dev-name").value.trim();
        n ? local.set(KEY.devName, n) : local.del(KEY.devName);
      } else {
        const t = $("#pv-token").value.trim().replace(/^Bearer\s+/i, "");
        if (!t) {
          err.textContent = "Paste a token, or use Sign out.";
          return;
        }
        local.set(KEY.token, t);
      }
      close();
      await identityChanged();
    });
    $("#pv-signout").addEventListener("click", async () => {
      local.del(KEY.token);
      local.del(KEY.devUser);
      local.del(KEY.devName);
      close();
      await identityChanged();
    });
    if (!cfg.dev && !local.get(KEY.token)) open();
  }

  async function identityChanged() {
    const ok = await refreshWho();
    if (!ok && !cfg.dev) {
      $("#pv-account").hidden = false;
      $("#pv-account-btn").setAttribute("aria-expanded", "true");
    }
    await refreshPage(true);
    if (tutor) tutor.reset();
  }

  // ------------------------------------------------------------------ the page's content

  /** Put server-rendered HTML into `el`. With a token, book images are fetched with it. */
  function setHTML(el, html) {
    const t = document.createElement("template");
    t.innerHTML = html; // inert: nothing loads until it is adopted
    if (!cfg.dev) {
      for (const img of t.content.querySelectorAll('img[src^="/learn-files/"]')) {
        img.dataset.src = img.getAttribute("src");
        img.removeAttribute("src");
      }
    }
    el.replaceChildren(t.content);
    loadImages(el);
  }

  async function loadImages(root) {
    for (const img of $$("img[data-src]", root)) {
      try {
        const resp = await fetch(img.dataset.src, { headers: identityHeaders() });
        if (!resp.ok) continue;
        img.src = URL.createObjectURL(await resp.blob());
        img.removeAttribute("data-src");
      } catch (_) {
        // leave the alt text
      }
    }
  }

  /** Replace the server's first render with the signed-in reader's view, when it differs. */
  async function refreshPage(force) {
    if (!signedIn) return;
    if (cfg.dev && !force && !local.get(KEY.devUser)) return; // the first render is already theirs
    let parts;
    try {
      parts = await getJSON("/learn-api/page?path=" + encodeURIComponent(location.pathname));
    } catch (_) {
      return;
    }
    if (!parts || parts.fingerprint === body.dataset.fingerprint) return;
    body.dataset.fingerprint = parts.fingerprint;
    document.title = parts.title + " · Panaversity Study";
    setHTML($("#pv-sidebar"), parts.nav);
    setHTML($("#pv-main"), parts.main);
    decorateLesson();
  }

  /** Copy buttons on code blocks. */
  function decorateLesson() {
    for (const pre of $$("#pv-lesson pre")) {
      if ($(".copy-code", pre)) continue;
      const code = $("code", pre) || pre;
      const btn = h("button", { type: "button", class: "copy-code", text: "Copy" });
      btn.setAttribute("aria-label", "Copy the code");
      btn.addEventListener("click", async () => {
        try {
          await navigator.clipboard.writeText(code.textContent);
          btn.textContent = "Copied";
        } catch (_) {
          btn.textContent = "Select and copy";
        }
        setTimeout(() => (btn.textContent = "Copy"), 2000);
      });
      pre.append(btn);
    }
  }

  // ------------------------------------------------------------------ drawers

  /** Show the tutor when it is a closed bottom sheet (phones); set by setupDrawers. */
  let openTutorSheet = () => {};

  function setupDrawers() {
    const navBtn = $("#pv-nav-toggle");
    const setNav = (open) => {
      body.classList.toggle("nav-open", open);
      navBtn.setAttribute("aria-expanded", String(open));
      if (open) {
        const first = $("#pv-sidebar a[aria-current]") || $("#pv-sidebar a, #pv-sidebar summary");
        if (first) first.focus();
      }
    };
    navBtn.addEventListener("click", () => setNav(!body.classList.contains("nav-open")));
    $("#pv-sidebar").addEventListener("keydown", (e) => {
      if (e.key === "Escape" && body.classList.contains("nav-open")) {
        setNav(false);
        navBtn.focus();
      }
    });
    const tutorBtn = $("#pv-tutor-toggle");
    if (!tutorBtn) return;
    const setTutor = (open) => {
      body.classList.toggle("tutor-open", open);
      tutorBtn.setAttribute("aria-expanded", String(open));
      if (open) $("#pv-prompt").focus();
    };
    tutorBtn.addEventListener("click", () => setTutor(!body.classList.contains("tutor-open")));
    $("#pv-tutor-close").addEventListener("click", () => {
      setTutor(false);
      tutorBtn.focus();
    });
    $("#pv-tutor").addEventListener("keydown", (e) => {
      if (e.key === "Escape" && body.classList.contains("tutor-open")) {
        setTutor(false);
        tutorBtn.focus();
      }
    });
    openTutorSheet = () => {
      if (getComputedStyle(tutorBtn).display !== "none") setTutor(true);
    };
  }

  // ------------------------------------------------------------------ tutor: rendering

  /** A small markdown renderer for the tutor's answers: DOM nodes, never HTML strings. */
  function renderMarkdown(text) {
    const frag = document.createDocumentFragment();
    const lines = text.split("\n");
    const isBlockStart = (l) => /^\s*(```|#{1,6}\s|[-*+]\s|\d+[.)]\s|>)/.test(l);
    let i = 0;
    while (i < lines.length) {
      const line = lines[i];
      if (/^\s*```/.test(line)) {
        const code = [];
        i++;
        while (i < lines.length && !/^\s*```\s*$/.test(lines[i])) code.push(lines[i++]);
        i++;
        frag.append(h("pre", {}, h("code", { text: code.join("\n") })));
      } else if (!line.trim()) {
        i++;
      } else if (/^#{1,6}\s/.test(line)) {
        frag.append(inline(h("p", { class: "md-h" }), line.replace(/^#{1,6}\s+/, "")));
        i++;
      } else if (/^\s*([-*+]|\d+[.)])\s/.test(line)) {
        const ordered = /^\s*\d/.test(line);
        const list = h(ordered ? "ol" : "ul");
        while (i < lines.length && /^\s*([-*+]|\d+[.)])\s/.test(lines[i])) {
          list.append(inline(h("li"), lines[i].replace(/^\s*([-*+]|\d+[.)])\s+/, "")));
          i++;
        }
        frag.append(list);
      } else if (/^>/.test(line)) {
        const quote = [];
        while (i < lines.length && /^>/.test(lines[i])) quote.push(lines[i++].replace(/^>\s?/, ""));
        frag.append(inline(h("blockquote"), quote.join("\n")));
      } else {
        const para = [];
        while (i < lines.length && lines[i].trim() && !(para.length && isBlockStart(lines[i]))) para.push(lines[i++]);
        frag.append(inline(h("p"), para.join("\n")));
      }
    }
    return frag;
  }

  const INLINE = /(`[^`\n]+`)|\*\*([^*\n]+)\*\*|(?<![\w*])\*([^*\s][^*\n]*?)\*(?![\w*])|(?<!\w)_([^_\s][^_\n]*?)_(?!\w)|\[([^\]\n]+)\]\((https?:\/\/[^)\s]+)\)/g;

  function inline(el, text) {
    let last = 0;
    const pushText = (s) => {
      const parts = s.split("\n");
      parts.forEach((p, j) => {
        if (j) el.append(h("br"));
        if (p) el.append(p);
      });
    };
    for (const m of text.matchAll(INLINE)) {
      pushText(text.slice(last, m.index));
      if (m[1]) el.append(h("code", { text: m[1].slice(1, -1) }));
      else if (m[2]) el.append(h("strong", { text: m[2] }));
      else if (m[3]) el.append(h("em", { text: m[3] }));
      else if (m[4]) el.append(h("em", { text: m[4] }));
      else if (m[5]) el.append(h("a", { href: m[6], rel: "noopener noreferrer", target: "_blank", text: m[5] }));
      last = m.index + m[0].length;
    }
    pushText(text.slice(last));
    return el;
  }

  // ------------------------------------------------------------------ tutor

  const HINTS = {
    teach: "Teach: the tutor walks you through this lesson and checks your understanding.",
    ask: "Ask: short, direct answers to your questions about the lesson.",
  };

  function createTutor() {
    const client = window.StudyChatKit.createClient({ headers: identityHeaders });
    const messages = $("#pv-messages");
    const prompt = $("#pv-prompt");
    const sendBtn = $("#pv-send");
    const stopBtn = $("#pv-stop");
    const status = $("#pv-status");
    const lessonKey = cfg.book + "/" + cfg.lesson;
    const threadKey = "pv.thread." + lessonKey;
    const liveKey = "pv.live." + lessonKey;

    const st = {
      mode: local.get(KEY.mode) === "ask" ? "ask" : "teach",
      thread: null, // {id, title}
      items: new Map(), // id → {el, bodyEl, type, parts, actionsEl}
      busy: false,
      stopping: false,
      lastUserId: null,
      selection: "", // text currently selected in the lesson
      quote: "", // the selection the next message is about
      lastRequest: null,
    };

    function announce(text) {
      status.textContent = "";
      setTimeout(() => (status.textContent = text), 50);
    }

    // ---------------------------------------------------------------- conversation view

    function emptyNote() {
      return h("p", { class: "empty-chat", id: "pv-empty-chat" }, cfg.tutorLesson
        ? "Start with a suggestion below, or write to the tutor."
        : "The tutor teaches the lessons of “" + cfg.tutorBook + "”; here it answers without this lesson's text.");
    }

    function clearView() {
      st.items.clear();
      st.lastUserId = null;
      messages.replaceChildren(emptyNote());
    }

    function setThread(t) {
      st.thread = t ? { id: t.id, title: t.title || "" } : null;
      const el = $("#pv-thread-title");
      if (st.thread && st.thread.title) {
        el.textContent = st.thread.title;
        el.hidden = false;
      } else {
        el.hidden = true;
      }
      if (st.thread) session.set(threadKey, st.thread.id);
      else session.del(threadKey);
    }

    function removeEmpty() {
      const e = $("#pv-empty-chat");
      if (e) e.remove();
      $("#pv-suggestions").replaceChildren();
    }

    function scrollToEnd(force) {
      const near = messages.scrollHeight - messages.scrollTop - messages.clientHeight < 120;
      if (force || near) messages.scrollTop = messages.scrollHeight;
    }

    function userText(item) {
      return (item.content || [])
        .map((c) => (c.type === "input_tag" ? "@" + c.text : c.text || ""))
        .join("");
    }

    /** Show an item (user or assistant message), creating or updating its element. */
    function upsert(item) {
      if (item.type !== "user_message" && item.type !== "assistant_message") return null;
      removeEmpty();
      let rec = st.items.get(item.id);
      if (!rec) {
        const bodyEl = h("div", { class: "msg-body" });
        const el = h("div", { class: "msg msg-" + (item.type === "user_message" ? "user" : "assistant"), "data-item-id": item.id });
        const label = h("span", { class: "visually-hidden", text: item.type === "user_message" ? "You said:" : "Tutor:" });
        el.append(label, bodyEl);
        rec = { el, bodyEl, type: item.type, parts: [], actionsEl: null };
        st.items.set(item.id, rec);
        messages.append(el);
      }
      if (item.type === "user_message") {
        st.lastUserId = item.id;
        rec.bodyEl.replaceChildren();
        if (item.quoted_text) rec.bodyEl.append(h("blockquote", { text: item.quoted_text }));
        rec.bodyEl.append(userText(item));
      } else {
        rec.parts = (item.content || []).map((c) => c.text || "");
        draw(rec);
      }
      scrollToEnd(item.type === "user_message");
      return rec;
    }

    function draw(rec) {
      rec.bodyEl.replaceChildren(renderMarkdown(rec.parts.join("")));
    }

    function scheduleDraw(rec) {
      if (rec.pending) return;
      rec.pending = true;
      requestAnimationFrame(() => {
        rec.pending = false;
        draw(rec);
        scrollToEnd(false);
      });
    }

    function addActions(id) {
      const rec = st.items.get(id);
      if (!rec || rec.type !== "assistant_message") return;
      if (rec.actionsEl) rec.actionsEl.remove();
      const fb = (kind, label) =>
        h("button", {
          type: "button",
          "aria-pressed": "false",
          "data-kind": kind,
          text: label,
          onclick: (e) => feedback(id, kind, e.currentTarget),
        });
      rec.actionsEl = h("div", { class: "msg-actions", role: "group", "aria-label": "This answer" },
        fb("positive", "Helpful"),
        fb("negative", "Not helpful"),
        h("button", { type: "button", class: "retry", text: "Retry", onclick: () => retry() }));
      rec.el.append(rec.actionsEl);
      // Only the latest answer can be retried.
      for (const [otherId, other] of st.items) {
        if (otherId !== id && other.actionsEl) {
          const r = $(".retry", other.actionsEl);
          if (r) r.remove();
        }
      }
    }

    function progress(text) {
      let p = $("#pv-progress");
      if (!text) {
        if (p) p.remove();
        return;
      }
      if (!p) {
        p = h("p", { class: "progress", id: "pv-progress" });
        messages.append(p);
      }
      p.textContent = text;
    }

    function notice(ev) {
      removeEmpty();
      const level = ["info", "warning", "danger"].includes(ev.level) ? ev.level : "info";
      const el = h("div", { class: "notice notice-" + level, role: "note" });
      if (ev.title) el.append(h("strong", { text: ev.title }));
      el.append(renderMarkdown(ev.message || ""));
      messages.append(el);
      scrollToEnd(true);
    }

    function showError(message, canRetry, again) {
      removeEmpty();
      progress("");
      const el = h("div", { class: "chat-error", role: "alert" }, h("strong", { text: "The tutor could not answer." }), message);
      if (canRetry) {
        el.append(h("div", {}, h("button", {
          type: "button",
          text: "Try again",
          onclick: () => {
            el.remove();
            again ? again() : retry();
          },
        })));
      }
      messages.append(el);
      scrollToEnd(true);
    }

    function errorText(e) {
      if (e && e.status === 429) {
        return "You've reached the message limit for now. " + (e.message || "") + (e.retryAfter ? "" : " Try again in a minute.");
      }
      if (e && e.status === 401) return "You are not signed in (or your token expired). Use Sign in at the top.";
      if (e && e.status === 404) return "This conversation no longer exists.";
      if (e && e.status) return e.message || "The server answered " + e.status + ".";
      return "The connection to the server dropped.";
    }

    // ---------------------------------------------------------------- streams

    function setBusy(b) {
      st.busy = b;
      sendBtn.disabled = b;
      stopBtn.hidden = !b;
      stopBtn.disabled = false;
      stopBtn.textContent = "Stop";
      messages.setAttribute("aria-busy", String(b));
    }

    function handle(ev) {
      switch (ev.type) {
        case "thread.created":
        case "thread.updated":
          setThread(ev.thread);
          session.set(liveKey, ev.thread.id);
          if (!$("#pv-history").hidden) loadHistory();
          break;
        case "thread.item.added": {
          const rec = upsert(ev.item);
          if (rec && rec.type === "assistant_message") {
            rec.parts = [];
            rec.el.classList.add("streaming");
            draw(rec);
          }
          break;
        }
        case "thread.item.updated": {
          const rec = st.items.get(ev.item_id);
          const u = ev.update || {};
          if (!rec) break;
          const i = u.content_index || 0;
          if (u.type === "assistant_message.content_part.text_delta") {
            progress("");
            rec.parts[i] = (rec.parts[i] || "") + u.delta;
            scheduleDraw(rec);
          } else if (u.type === "assistant_message.content_part.added" || u.type === "assistant_message.content_part.done") {
            rec.parts[i] = (u.content && u.content.text) || "";
            scheduleDraw(rec);
          }
          break;
        }
        case "thread.item.done": {
          const rec = upsert(ev.item);
          if (rec && rec.type === "assistant_message") {
            rec.el.classList.remove("streaming");
            progress("");
            addActions(ev.item.id);
          }
          break;
        }
        case "thread.item.replaced":
          upsert(ev.item);
          break;
        case "thread.item.removed": {
          const rec = st.items.get(ev.item_id);
          if (rec) rec.el.remove();
          st.items.delete(ev.item_id);
          break;
        }
        case "progress_update":
          progress(ev.text);
          break;
        case "notice":
          notice(ev);
          break;
        case "error":
          showError(ev.message || "Something went wrong while answering.", !!ev.allow_retry);
          break;
        default:
          break; // stream_options, client_effect: nothing to show
      }
    }

    /** Run one streaming request to its end. */
    async function run(type, params, query, opts) {
      const o = opts || {};
      if (!o.resume) st.lastRequest = { type, params, query };
      // Until this stream ends, a reload re-attaches to it (threads.resume_stream).
      if (st.thread) session.set(liveKey, st.thread.id);
      setBusy(true);
      announce("The tutor is answering…");
      let ok = false;
      try {
        for await (const ev of client.stream(type, params, { query, idempotent: !!o.idempotent })) handle(ev);
        ok = true;
      } catch (e) {
        if (o.resume && e.status === 404) {
          ok = true; // nothing left to re-attach to; the stored thread is complete
        } else if (e instanceof TypeError || !e.status) {
          showError(errorText(e), true, () => resume());
        } else {
          const again = st.lastRequest;
          showError(errorText(e), e.status === 429 || e.status >= 500, () => run(again.type, again.params, again.query, { idempotent: true }));
        }
      } finally {
        for (const rec of st.items.values()) rec.el.classList.remove("streaming");
        progress("");
        setBusy(false);
        if (ok) session.del(liveKey);
        const last = [...st.items.values()].filter((r) => r.type === "assistant_message").pop();
        const said = last ? last.parts.join("").slice(0, 400) : "";
        announce(ok ? "The tutor answered. " + said : "The tutor stopped.");
        refreshSuggestions();
      }
    }

    /**
     * Re-attach to the thread's running (or just finished) reply. `after: 0` replays the turn from
     * its first frame: the view is keyed by item id, so what the reloaded thread already shows is
     * updated in place, never duplicated.
     */
    async function resume() {
      if (!st.thread || st.busy) return;
      await run("threads.resume_stream", { thread_id: st.thread.id, after: 0 }, {}, { resume: true });
    }

    async function send(text) {
      if (st.busy) return;
      let t = (text || "").trim();
      if (!t && st.quote) t = "Explain this passage.";
      if (!t) return;
      const input = {
        content: [{ type: "input_text", text: t }],
        attachments: [],
        inference_options: { model: st.mode },
      };
      const query = { lesson_path: cfg.tutorLesson, user_name: userName() };
      if (st.quote) {
        input.quoted_text = st.quote;
        query.selected_text = st.quote;
      }
      prompt.value = "";
      clearQuote();
      if (st.thread) {
        await run("threads.add_user_message", { thread_id: st.thread.id, input }, query, { idempotent: true });
      } else {
        await run("threads.create", { input }, query, { idempotent: true });
      }
    }

    async function retry() {
      if (st.busy || !st.thread || !st.lastUserId) return;
      const userRec = st.items.get(st.lastUserId);
      if (userRec) {
        // The server deletes everything after that message; so does the view.
        while (userRec.el.nextSibling) {
          const n = userRec.el.nextSibling;
          const id = n.dataset && n.dataset.itemId;
          if (id) st.items.delete(id);
          n.remove();
        }
      }
      await run("threads.retry_after_item", { thread_id: st.thread.id, item_id: st.lastUserId }, { lesson_path: cfg.tutorLesson, user_name: userName() });
    }

    async function stop() {
      if (!st.thread) return;
      stopBtn.disabled = true;
      stopBtn.textContent = "Stopping…";
      try {
        await client.request("threads.stop_stream", { thread_id: st.thread.id });
      } catch (e) {
        stopBtn.disabled = false;
        stopBtn.textContent = "Stop";
      }
    }

    async function feedback(id, kind, btn) {
      if (!st.thread) return;
      try {
        await client.request("items.feedback", { thread_id: st.thread.id, item_ids: [id], kind });
        for (const b of $$("button[data-kind]", btn.parentElement)) b.setAttribute("aria-pressed", String(b === btn));
        announce("Thanks for the feedback.");
      } catch (e) {
        announce("The feedback could not be saved.");
      }
    }

    // ---------------------------------------------------------------- threads

    async function openThread(id, quiet) {
      let t;
      try {
        t = await client.request("threads.get_by_id", { thread_id: id });
      } catch (e) {
        if (e.status === 404) {
          setThread(null);
          return false;
        }
        if (!quiet) showError(errorText(e), false);
        return false;
      }
      clearView();
      setThread(t);
      const items = (t.items && t.items.data) || [];
      let page = t.items || {};
      while (page.has_more && page.after) {
        page = await client.request("items.list", { thread_id: id, after: page.after, order: "asc", limit: 100 });
        items.push(...(page.data || []));
      }
      let lastAssistant = null;
      for (const item of items) {
        upsert(item);
        if (item.type === "assistant_message") lastAssistant = item.id;
      }
      if (lastAssistant) addActions(lastAssistant);
      if (!items.length) messages.replaceChildren(emptyNote());
      scrollToEnd(true);
      refreshSuggestions();
      return true;
    }

    function newChat() {
      setThread(null);
      session.del(liveKey);
      clearView();
      refreshSuggestions();
      prompt.focus();
    }

    function fmtDate(s) {
      const d = new Date(s);
      return isNaN(d) ? "" : d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
    }

    async function loadHistory() {
      const list = $("#pv-thread-list");
      let page;
      try {
        page = await client.request("threads.list", { limit: 50, order: "desc" });
      } catch (e) {
        list.replaceChildren(h("li", { class: "hint", text: errorText(e) }));
        return;
      }
      const threads = page.data || [];
      $("#pv-history-empty").hidden = threads.length > 0;
      list.replaceChildren(...threads.map(threadRow));
    }

    function threadRow(t) {
      const label = () => t.title || "New chat";
      const row = h("li", { class: "thread-row", "data-thread-id": t.id, "aria-current": st.thread && st.thread.id === t.id ? "true" : null });
      const show = () => {
        row.replaceChildren(
          h("button", {
            type: "button",
            class: "thread-open",
            onclick: async () => {
              if (st.busy) return;
              if (await openThread(t.id)) {
                toggleHistory(false);
                prompt.focus();
              }
            },
          }, h("span", { text: label() }), h("small", { text: fmtDate(t.created_at) })),
          h("button", { type: "button", class: "thread-rename", "aria-label": "Rename “" + label() + "”", text: "Rename", onclick: rename }),
          h("button", { type: "button", class: "thread-delete", "aria-label": "Delete “" + label() + "”", text: "Delete", onclick: confirmDelete }));
      };
      const rename = () => {
        const inputId = "pv-rename-" + t.id;
        const input = h("input", { id: inputId, value: label(), maxlength: "200", autocomplete: "off" });
        const form = h("form", {
          onsubmit: async (e) => {
            e.preventDefault();
            const v = input.value.trim();
            if (!v) return input.focus();
            try {
              const updated = await client.request("threads.update", { thread_id: t.id, title: v });
              if (st.thread && st.thread.id === t.id) setThread(updated);
              t.title = updated.title || v;
              announce("Renamed to " + t.title + ".");
            } catch (err) {
              announce(errorText(err));
            }
            show();
            $(".thread-open", row).focus();
          },
        }, h("label", { for: inputId, text: "New name" }), input,
        h("button", { type: "submit", class: "primary", text: "Save" }),
        h("button", { type: "button", text: "Cancel", onclick: () => { show(); $(".thread-rename", row).focus(); } }));
        row.replaceChildren(form);
        input.focus();
        input.select();
      };
      const confirmDelete = () => {
        const yes = h("button", {
          type: "button",
          class: "primary confirm-delete",
          text: "Delete",
          onclick: async () => {
            try {
              await client.request("threads.delete", { thread_id: t.id });
              if (st.thread && st.thread.id === t.id) newChat();
              announce("Conversation deleted.");
            } catch (err) {
              announce(errorText(err));
            }
            await loadHistory();
            const first = $("#pv-thread-list button");
            (first || $("#pv-history-btn")).focus();
          },
        });
        row.replaceChildren(
          h("p", { class: "confirm", text: "Delete “" + label() + "” for good?" }),
          yes,
          h("button", { type: "button", text: "Keep", onclick: () => { show(); $(".thread-delete", row).focus(); } }));
        yes.focus();
      };
      show();
      return row;
    }

    function toggleHistory(open) {
      const panel = $("#pv-history");
      const btn = $("#pv-history-btn");
      const want = open === undefined ? panel.hidden : open;
      panel.hidden = !want;
      btn.setAttribute("aria-expanded", String(want));
      if (want) loadHistory();
    }

    // ---------------------------------------------------------------- suggestions, modes

    async function refreshSuggestions() {
      const box = $("#pv-suggestions");
      if (st.items.size || st.busy) {
        box.replaceChildren();
        return;
      }
      const q = new URLSearchParams({ mode: st.mode });
      if (cfg.tutorLesson) q.set("lesson_path", cfg.tutorLesson);
      try {
        const data = await getJSON("/chatkit/suggestions?" + q);
        if (st.items.size || st.busy) return;
        box.replaceChildren(...(data.suggestions || []).map((s) =>
          h("button", { type: "button", text: s, onclick: () => send(s) })));
      } catch (_) {
        box.replaceChildren();
      }
    }

    function setMode(mode) {
      st.mode = mode === "ask" ? "ask" : "teach";
      local.set(KEY.mode, st.mode);
      $("#pv-mode-" + st.mode).checked = true;
      $("#pv-mode-hint").textContent = HINTS[st.mode];
      refreshSuggestions();
    }

    // ---------------------------------------------------------------- selection

    const askBtn = h("button", { type: "button", id: "pv-ask-selection", class: "ask-selection floating", hidden: true, text: "Ask the tutor about this" });

    function placeAskButton() {
      const lessonEl = $("#pv-lesson");
      const sel = window.getSelection();
      const text = sel && !sel.isCollapsed ? sel.toString().trim() : "";
      if (!lessonEl || !text || !lessonEl.contains(sel.anchorNode) || !lessonEl.contains(sel.focusNode)) {
        if (document.activeElement !== askBtn) askBtn.hidden = true;
        return;
      }
      st.selection = text.slice(0, MAX_SELECTION);
      if (askBtn.parentElement !== lessonEl.parentElement) lessonEl.after(askBtn);
      const r = sel.getRangeAt(0).getBoundingClientRect();
      askBtn.hidden = false;
      askBtn.style.top = Math.round(r.bottom + window.scrollY + 8) + "px";
      askBtn.style.left = Math.round(Math.max(8, Math.min(r.left + window.scrollX, window.innerWidth - askBtn.offsetWidth - 8))) + "px";
    }

    function attachQuote(text) {
      st.quote = text;
      $("#pv-selection-text").textContent = text.length > 280 ? text.slice(0, 277) + "…" : text;
      $("#pv-selection").hidden = false;
      prompt.placeholder = "What would you like to know about this passage?";
      askBtn.hidden = true;
      setMode("ask");
      openTutorSheet();
      prompt.focus();
    }

    function clearQuote() {
      st.quote = "";
      $("#pv-selection").hidden = true;
      prompt.placeholder = "Ask a question or answer the tutor";
    }

    // ---------------------------------------------------------------- wiring

    $("#pv-composer").addEventListener("submit", (e) => {
      e.preventDefault();
      send(prompt.value);
    });
    prompt.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        send(prompt.value);
      }
    });
    stopBtn.addEventListener("click", stop);
    $("#pv-new-chat").addEventListener("click", () => {
      if (!st.busy) newChat();
    });
    $("#pv-history-btn").addEventListener("click", () => toggleHistory());
    $("#pv-history").addEventListener("keydown", (e) => {
      if (e.key === "Escape") {
        e.stopPropagation();
        toggleHistory(false);
        $("#pv-history-btn").focus();
      }
    });
    for (const r of $$('input[name="pv-mode"]')) r.addEventListener("change", () => setMode(r.value));
    $("#pv-clear-selection").addEventListener("click", () => {
      clearQuote();
      prompt.focus();
    });
    askBtn.addEventListener("click", () => attachQuote(st.selection));
    let selTimer = 0;
    document.addEventListener("selectionchange", () => {
      clearTimeout(selTimer);
      selTimer = setTimeout(placeAskButton, 120);
    });

    setMode(st.mode);
    clearView();

    return {
      /** Reload state for the current reader: their saved thread, a reply still running. */
      async start() {
        const saved = session.get(threadKey);
        if (saved && (await openThread(saved, true))) {
          if (session.get(liveKey) === saved) await resume();
        } else {
          refreshSuggestions();
        }
      },
      /** Another reader: start over. */
      reset() {
        session.del(threadKey);
        session.del(liveKey);
        toggleHistory(false);
        setThread(null);
        clearView();
        refreshSuggestions();
      },
    };
  }

  // ------------------------------------------------------------------ start

  let tutor = null;

  async function main() {
    setupDrawers();
    setupAccount();
    decorateLesson();
    if (cfg.tutor && $("#pv-tutor")) tutor = createTutor();
    const ok = await refreshWho();
    if (ok) await refreshPage(false);
    if (tutor && (ok || cfg.dev)) await tutor.start();
    body.dataset.ready = "true";
  }

  main();
})();
