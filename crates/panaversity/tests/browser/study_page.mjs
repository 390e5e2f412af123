// The built-in study page, end to end in Debian's headless Chromium (playwright-core driving
// /usr/bin/chromium; no browser download).
//
// Run by the Rust integration test crates/panaversity/tests/it/browser.rs, which starts two real
// servers and a fake OpenAI-compatible model that streams slowly, then runs:
//
//     node study_page.mjs
//
// with STUDY_DEV_URL (dev mode, the fake model, a small message rate limit), STUDY_AUTH_URL (auth
// on, no model), STUDY_TOKEN (an API key of `token-student` on the second server), CHROMIUM (the
// browser) and ARTIFACTS (a directory for screenshots and the report).
//
// The last lines are `REPORT {json}` (what the Rust test checks against the fake model's request
// log) and "N passed, M failed"; exit code 0 when every check passed.

import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { createRequire } from "node:module";

import { chromium } from "playwright-core";

const require = createRequire(import.meta.url);
const AXE = require.resolve("axe-core/axe.min.js");

const DEV = (process.env.STUDY_DEV_URL || "").replace(/\/+$/, "");
const AUTH = (process.env.STUDY_AUTH_URL || "").replace(/\/+$/, "");
const TOKEN = process.env.STUDY_TOKEN || "";
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const ARTIFACTS = process.env.ARTIFACTS || path.join(os.tmpdir(), "browser-artifacts");
if (!DEV || !AUTH || !TOKEN) {
  console.error("STUDY_DEV_URL, STUDY_AUTH_URL and STUDY_TOKEN are required");
  process.exit(2);
}
fs.mkdirSync(ARTIFACTS, { recursive: true });

const LESSON = "/learn/sample-book/01-Foundations/01-What-Is-A-Program/01-instructions";
const OVERLAY_LESSON = "/learn/sample-book/01-Foundations/01-What-Is-A-Program/02-values-and-names";
/** What the fake model answers, in full (study/browser.rs streams it in pieces). */
const ANSWER = "Good question! A program runs in order: each line finishes before the next. What happens if you swap two lines?";
const TIMEOUT = 30_000;

let PASSED = 0;
let FAILED = 0;
const report = {};

function check(cond, what) {
  if (cond) {
    PASSED += 1;
  } else {
    FAILED += 1;
    console.log(`FAIL: ${what}`);
  }
}

function log(msg) {
  console.log(`[${new Date().toISOString().slice(11, 23)}] ${msg}`);
}

const ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

/** A browser with a fresh profile. */
async function launch(options) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "study-chromium-"));
  const ctx = await chromium.launchPersistentContext(dir, {
    executablePath: CHROMIUM,
    headless: true,
    args: ARGS,
    viewport: { width: 1440, height: 900 },
    ...options,
  });
  ctx.setDefaultTimeout(TIMEOUT);
  return ctx;
}

/**
 * A page that records every request (all must stay on `origin`), page errors, console errors and
 * Content-Security-Policy violations.
 */
async function watchedPage(ctx, origin, label) {
  const page = await ctx.newPage();
  const requests = [];
  const problems = [];
  page.on("request", (r) => requests.push(r.url()));
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("console", (m) => {
    // A 4xx/5xx the page handles itself (429, the 404 of a finished stream) is logged by Chromium
    // as a failed resource load: not a script problem.
    if (m.type() === "error" && !/Failed to load resource/.test(m.text())) problems.push(`console: ${m.text()}`);
  });
  await page.addInitScript(() => {
    window.__csp = [];
    document.addEventListener("securitypolicyviolation", (e) =>
      window.__csp.push(`${e.violatedDirective} ${e.blockedURI}`));
  });
  page.finish = async () => {
    const foreign = requests.filter((u) => !u.startsWith(origin + "/") && !u.startsWith("blob:" + origin + "/"));
    check(requests.length > 0, `${label}: requests were recorded`);
    check(foreign.length === 0, `${label}: every request stays on ${origin}: ${JSON.stringify(foreign)}`);
    let csp = [];
    try {
      csp = await page.evaluate(() => window.__csp);
    } catch (_) {
      // closed
    }
    check(csp.length === 0, `${label}: no CSP violations: ${JSON.stringify(csp)}`);
    check(problems.length === 0, `${label}: no script errors: ${JSON.stringify(problems)}`);
    return requests;
  };
  return page;
}

const lastAnswer = (page) => page.locator("#pv-messages .msg-assistant").last();

/** The id of the newest answer shown, if any. */
async function lastId(page) {
  return page.evaluate(() => {
    const all = document.querySelectorAll("#pv-messages .msg-assistant");
    return all.length ? all[all.length - 1].dataset.itemId : null;
  });
}

/** Wait for an answer other than `prevId` to finish, with the tutor idle; its text. */
async function newAnswer(page, prevId) {
  await page.waitForFunction((prev) => {
    const all = document.querySelectorAll("#pv-messages .msg-assistant");
    const last = all[all.length - 1];
    return last && last.dataset.itemId !== prev && !last.classList.contains("streaming") &&
      last.querySelector(".msg-actions") && document.querySelector("#pv-stop").hidden;
  }, prevId);
  return (await lastAnswer(page).locator(".msg-body").innerText()).trim();
}

/** Wait until a new answer (not `prevId`) shows some text while it is still being written. */
async function answerStarted(page, prevId) {
  await page.waitForFunction((prev) => {
    const all = document.querySelectorAll("#pv-messages .msg-assistant");
    const last = all[all.length - 1];
    return last && last.dataset.itemId !== prev && last.querySelector(".msg-body").textContent.length > 0;
  }, prevId);
}

async function countAnswers(page) {
  return page.locator("#pv-messages .msg-assistant").count();
}

/** Record the text of the newest answer on every animation frame where it changed. */
async function recordPaints(page) {
  await page.evaluate(() => {
    window.__paints = [];
    const tick = () => {
      const all = document.querySelectorAll("#pv-messages .msg-assistant .msg-body");
      const t = all.length ? all[all.length - 1].textContent : "";
      const p = window.__paints;
      if (t && p[p.length - 1] !== t) p.push(t);
      window.__paintTimer = requestAnimationFrame(tick);
    };
    tick();
  });
}

async function paints(page) {
  return page.evaluate(() => {
    cancelAnimationFrame(window.__paintTimer);
    return window.__paints;
  });
}

async function send(page, text) {
  await page.fill("#pv-prompt", text);
  await page.press("#pv-prompt", "Enter");
}

async function axeScan(page, label) {
  await page.addScriptTag({ path: AXE });
  const result = await page.evaluate(async () => {
    // eslint-disable-next-line no-undef
    const r = await axe.run(document, { resultTypes: ["violations"] });
    return r.violations.map((v) => ({
      id: v.id,
      impact: v.impact,
      help: v.help,
      nodes: v.nodes.slice(0, 5).map((n) => n.target.join(" ") + " :: " + (n.failureSummary || "").replace(/\s+/g, " ")),
    }));
  });
  const bad = result.filter((v) => v.impact === "serious" || v.impact === "critical");
  check(bad.length === 0, `axe (${label}): no serious or critical violations: ${JSON.stringify(bad, null, 1)}`);
  report.axe = report.axe || {};
  report.axe[label] = result.map((v) => `${v.impact} ${v.id}`);
  log(`axe ${label}: ${result.length} violations (${bad.length} serious/critical)`);
}

// ---------------------------------------------------------------------------------------------
// 1. Dev mode: the whole tutor flow, under the page's real Content-Security-Policy.

async function devFlow() {
  const ctx = await launch({});
  const page = await watchedPage(ctx, DEV, "dev");
  try {
    log("open /");
    const resp = await page.goto(DEV + "/");
    check(resp.status() === 200, "GET / answers 200");
    const csp = resp.headers()["content-security-policy"] || "";
    check(csp.includes("default-src 'self'") && csp.includes("script-src 'self'") && !csp.includes("unsafe-inline"),
      `a strict CSP: ${csp}`);
    await page.waitForSelector('body[data-ready="true"]');
    check(await page.locator("h1", { hasText: "Study" }).isVisible(), "the home page has its heading");
    check((await page.locator("#pv-sidebar .tree a").count()) >= 10, "the chapter tree lists the lessons");

    log("pick a student (dev mode)");
    await page.click("#pv-account-btn");
    await page.fill("#pv-dev-user", "browser-student");
    await page.fill("#pv-dev-name", "Ada");
    await page.click('#pv-account-form button[type="submit"]');
    await page.waitForFunction(() => document.querySelector("#pv-who-text").textContent.includes("browser-student"));
    check((await page.textContent("#pv-who-text")).includes("Ada"), "the header shows who is studying");

    log("navigate to a lesson through the chapter tree");
    await page.click('#pv-sidebar a:text-is("Instructions and Order")');
    await page.waitForURL("**" + LESSON);
    await page.waitForSelector('body[data-ready="true"]');
    check((await page.textContent("#pv-lesson h1")).trim() === "Instructions and Order", "the lesson is rendered");
    check(!(await page.content()).includes("sidebar_position"), "front matter is stripped");
    check(await page.locator("#pv-lesson pre code.language-python").isVisible(), "code blocks are rendered");
    check((await page.getAttribute('#pv-sidebar a[aria-current="page"]', "href")) === LESSON, "the tree marks the current lesson");

    log("Teach: stream the first answer");
    await page.click('label[for="pv-mode-teach"]');
    await page.waitForSelector("#pv-suggestions button");
    const suggestion = page.locator("#pv-suggestions button").first();
    const suggestionText = await suggestion.innerText();
    check(/Teach me/.test(suggestionText), `a Teach suggestion is offered: ${suggestionText}`);
    await recordPaints(page);
    await suggestion.click();
    const first = await newAnswer(page, null);
    const seen = await paints(page);
    report.paints = seen.length;
    check(first.includes(ANSWER), `the whole answer arrives: ${JSON.stringify(first)}`);
    check(seen.length >= 3, `the answer arrived in at least three paints (got ${seen.length}: ${JSON.stringify(seen)})`);
    check(seen.every((t, i) => i === 0 || t.length >= seen[i - 1].length), "the painted text only grows");
    check(seen.length > 0 && seen[0].length < ANSWER.length, "the first paint showed part of the answer");
    check(await lastAnswer(page).locator("strong", { hasText: "in order" }).isVisible(), "markdown in answers is rendered");
    check(await page.locator("#pv-thread-title").isVisible(), "the thread title is shown");

    log("answer the tutor");
    let prev = await lastId(page);
    await send(page, "A list of instructions that run in order.");
    await newAnswer(page, prev);
    check((await page.locator("#pv-messages .msg-user").count()) === 2, "both of the student's messages are shown");

    log("feedback and retry");
    const helpful = lastAnswer(page).locator('button:text-is("Helpful")');
    await helpful.click();
    await page.waitForFunction(() => {
      const all = document.querySelectorAll("#pv-messages .msg-assistant");
      return all[all.length - 1].querySelector('button[data-kind="positive"]').getAttribute("aria-pressed") === "true";
    });
    check(true, "feedback is recorded");
    prev = await lastId(page);
    await lastAnswer(page).locator('button:text-is("Retry")').click();
    const retried = await newAnswer(page, prev);
    check(retried.includes(ANSWER) && (await countAnswers(page)) === 2, "retry replaces the last answer");

    log("stop a reply");
    prev = await lastId(page);
    await send(page, "Tell me more about ordering bugs.");
    await answerStarted(page, prev);
    await page.click("#pv-stop");
    const stopped = await newAnswer(page, prev);
    report.stopped = stopped;
    check(stopped.length > 0 && !stopped.includes(ANSWER), `stop keeps a partial answer: ${JSON.stringify(stopped)}`);

    log("reload during a reply and re-attach");
    prev = await lastId(page);
    await send(page, "Give me another example, please.");
    await answerStarted(page, prev);
    await page.reload();
    await page.waitForSelector('body[data-ready="true"]');
    const resumed = await newAnswer(page, prev);
    check(resumed.includes(ANSWER), `after a reload the running reply is re-attached and completed: ${JSON.stringify(resumed)}`);
    check((await countAnswers(page)) === 4, "the reloaded thread shows all four answers");

    log("a provider failure, shown with a retry");
    prev = await lastId(page);
    await send(page, "please fail once");
    await page.waitForSelector("#pv-messages .chat-error");
    const errText = await page.textContent("#pv-messages .chat-error");
    report.providerError = errText;
    check(errText.length > 20, `the provider error is shown: ${errText}`);
    await page.click('#pv-messages .chat-error button:text-is("Try again")');
    check((await newAnswer(page, prev)).includes(ANSWER), "trying again answers");

    log("history: list, open, rename, delete");
    const shown = await page.locator("#pv-messages .msg").count();
    await page.click("#pv-new-chat");
    check((await page.locator("#pv-messages .msg").count()) === 0, "New chat starts an empty conversation");
    await page.click("#pv-history-btn");
    await page.waitForSelector("#pv-thread-list .thread-row");
    check((await page.locator("#pv-thread-list .thread-row").count()) === 1, "the history lists the thread");
    await page.click("#pv-thread-list .thread-open");
    await page.waitForFunction((n) => document.querySelectorAll("#pv-messages .msg").length === n, shown);
    check(await page.locator("#pv-history").isHidden(), "opening a thread closes the history");
    check((await page.locator("#pv-messages .msg-assistant").count()) === 5, "the opened thread shows its answers");
    await page.click("#pv-history-btn");
    await page.waitForSelector("#pv-thread-list .thread-row");
    await page.click("#pv-thread-list .thread-rename");
    await page.fill("#pv-thread-list input", "My tea lesson");
    await page.press("#pv-thread-list input", "Enter");
    await page.waitForSelector('#pv-thread-list .thread-open:has-text("My tea lesson")');
    check((await page.textContent("#pv-thread-title")) === "My tea lesson", "renaming the open thread retitles it");
    await page.click("#pv-thread-list .thread-delete");
    await page.click("#pv-thread-list .confirm-delete");
    await page.waitForSelector("#pv-history-empty:not([hidden])");
    check((await page.locator("#pv-thread-list .thread-row").count()) === 0, "the deleted thread is gone from the history");
    check((await page.locator("#pv-messages .msg").count()) === 0, "deleting the open thread clears the conversation");
    await page.click("#pv-history-btn");

    log("select text in the lesson and ask about it");
    const para = page.locator("#pv-lesson p").nth(1);
    await para.click({ clickCount: 3 });
    await page.waitForSelector("#pv-ask-selection:not([hidden])");
    const selection = await page.evaluate(() => window.getSelection().toString().trim());
    check(selection.length > 20, `text is selected: ${selection}`);
    await page.click("#pv-ask-selection");
    check(await page.isChecked("#pv-mode-ask"), "asking about a selection switches to Ask");
    check((await page.textContent("#pv-selection-text")).length > 20, "the selection is shown with the composer");
    prev = await lastId(page);
    await send(page, "Why does this matter?");
    await newAnswer(page, prev);
    check((await page.locator("#pv-messages .msg-user blockquote").innerText()).trim().length > 20, "the question shows its quote");
    report.selection = selection;

    log("the rate limit message");
    await send(page, "One more question, please.");
    await page.waitForSelector("#pv-messages .chat-error");
    const limit = await page.textContent("#pv-messages .chat-error");
    report.rateLimit = limit;
    check(/message limit/.test(limit) && /Rate limit of 8/.test(limit), `the 429 is explained: ${limit}`);

    log("the personalized lesson and its marker");
    await page.click(`#pv-sidebar a[href="${OVERLAY_LESSON}"]`);
    await page.waitForURL("**" + OVERLAY_LESSON);
    await page.waitForSelector('body[data-ready="true"]');
    await page.waitForSelector("#pv-overlay-marker");
    check((await page.textContent("#pv-lesson")).includes("BROWSER-OVERLAY"), "the student's own version of the lesson is shown");
    check((await page.locator("#pv-sidebar .overlay-dot").count()) === 1, "the tree marks the personalized lesson");
    await page.waitForFunction(() => {
      const img = document.querySelector("#pv-lesson img");
      return img && img.complete && img.naturalWidth > 0;
    });
    check(true, "the lesson's image loads from the book's assets");

    report.devRequests = (await page.finish()).length;
  } finally {
    await ctx.close();
  }
}

// ---------------------------------------------------------------------------------------------
// 2. Accessibility (axe-core) and screenshots, light and dark, desktop and phone. axe is injected
//    with addScriptTag, which the page's CSP would refuse: this profile bypasses CSP.

async function a11yAndScreenshots() {
  for (const colorScheme of ["light", "dark"]) {
    const ctx = await launch({ bypassCSP: true, colorScheme });
    try {
      const page = await ctx.newPage();
      await page.addInitScript(() => {
        localStorage.setItem("pv.devUser", "axe-student");
        localStorage.setItem("pv.devName", "Grace");
      });
      await page.goto(DEV + "/");
      await page.waitForSelector('body[data-ready="true"]');
      await axeScan(page, `home ${colorScheme}`);

      await page.goto(DEV + LESSON);
      await page.waitForSelector('body[data-ready="true"]');
      await page.waitForSelector("#pv-suggestions button");
      await axeScan(page, `lesson ${colorScheme}`);

      if (colorScheme === "light") {
        await send(page, "What is a program?");
        await newAnswer(page, null);
        await page.click("#pv-history-btn");
        await page.waitForSelector("#pv-thread-list .thread-row");
        await axeScan(page, "tutor panel with a conversation and the history");
        await page.click("#pv-history-btn");
        await page.mouse.move(0, 0);
        await page.screenshot({ path: path.join(ARTIFACTS, "study-page-desktop.png") });
      } else {
        await page.screenshot({ path: path.join(ARTIFACTS, "study-page-desktop-dark.png") });
      }

      await page.setViewportSize({ width: 390, height: 844 });
      await page.reload();
      await page.waitForSelector('body[data-ready="true"]');
      check(await page.locator("#pv-tutor-toggle").isVisible(), `phone (${colorScheme}): the tutor is behind a toggle`);
      check(!(await page.locator("#pv-tutor").isVisible()), `phone (${colorScheme}): the tutor sheet starts closed`);
      const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      check(overflow <= 0, `phone (${colorScheme}): no horizontal scrolling (${overflow}px)`);
      await page.screenshot({ path: path.join(ARTIFACTS, `study-page-phone-${colorScheme}.png`) });
      await page.click("#pv-tutor-toggle");
      await page.waitForSelector("#pv-tutor", { state: "visible" });
      check(await page.evaluate(() => document.activeElement.id === "pv-prompt"), `phone (${colorScheme}): opening the tutor focuses the composer`);
      await axeScan(page, `phone tutor sheet ${colorScheme}`);
      await page.screenshot({ path: path.join(ARTIFACTS, `study-page-phone-tutor-${colorScheme}.png`) });
      await page.keyboard.press("Escape");
      check(!(await page.locator("#pv-tutor").isVisible()), `phone (${colorScheme}): Escape closes the tutor sheet`);
      await page.click("#pv-nav-toggle");
      check(await page.locator("#pv-sidebar").isVisible(), `phone (${colorScheme}): the chapters open as a drawer`);
    } finally {
      await ctx.close();
    }
  }
}

// ---------------------------------------------------------------------------------------------
// 3. Keyboard: the skip link comes first and the tutor can be used without a mouse.

async function keyboard() {
  const ctx = await launch({});
  const page = await watchedPage(ctx, DEV, "keyboard");
  try {
    await page.addInitScript(() => localStorage.setItem("pv.devUser", "keyboard-student"));
    await page.goto(DEV + LESSON);
    await page.waitForSelector('body[data-ready="true"]');
    await page.keyboard.press("Tab");
    check(await page.evaluate(() => document.activeElement.classList.contains("skip-link")), "Tab reaches the skip link first");
    await page.keyboard.press("Enter");
    check(await page.evaluate(() => document.activeElement.id === "pv-main"), "the skip link moves focus to the content");
    await page.focus("#pv-mode-teach");
    await page.keyboard.press("ArrowRight");
    check(await page.isChecked("#pv-mode-ask"), "arrow keys switch Teach / Ask");
    await page.focus("#pv-history-btn");
    await page.keyboard.press("Enter");
    check((await page.getAttribute("#pv-history-btn", "aria-expanded")) === "true", "the history opens from the keyboard");
    await page.finish();
  } finally {
    await ctx.close();
  }
}

// ---------------------------------------------------------------------------------------------
// 4. Auth on: the page asks for a token, shows who is signed in, fetches the student's lesson
//    (and its image) with it, and shows the provider notice of a server without a model.

async function authFlow() {
  const ctx = await launch({});
  const page = await watchedPage(ctx, AUTH, "auth");
  try {
    await page.goto(AUTH + LESSON);
    await page.waitForSelector('body[data-ready="true"]');
    check(await page.locator("#pv-signin-needed").isVisible(), "without a token the page asks to sign in");
    check(await page.locator("#pv-token").isVisible(), "the token field is open");
    await page.fill("#pv-token", TOKEN);
    await page.click('#pv-account-form button[type="submit"]');
    await page.waitForSelector("#pv-lesson h1");
    check((await page.textContent("#pv-who-text")).includes("token-student"), "the header shows who is signed in");
    check((await page.textContent("#pv-lesson h1")).trim() === "Instructions and Order", "the lesson loads with the token");

    log("auth: a provider notice");
    await send(page, "Hello tutor");
    await page.waitForSelector("#pv-messages .notice");
    const notice = await page.textContent("#pv-messages .notice");
    report.notice = notice;
    check(/No LLM provider is configured/.test(notice), `the provider notice is shown: ${notice}`);
    await newAnswer(page, null);

    log("auth: the personalized lesson, its image fetched with the token");
    await page.goto(AUTH + OVERLAY_LESSON);
    await page.waitForSelector("#pv-overlay-marker");
    check((await page.textContent("#pv-lesson")).includes("TOKEN-OVERLAY"), "the token student's version is shown");
    await page.waitForFunction(() => {
      const img = document.querySelector("#pv-lesson img");
      return img && img.src.startsWith("blob:") && img.complete && img.naturalWidth > 0;
    });
    check(true, "the image is fetched with the token");
    await page.finish();
  } finally {
    await ctx.close();
  }
}

async function main() {
  await devFlow();
  await keyboard();
  await authFlow();
  await a11yAndScreenshots();
}

try {
  await main();
} catch (e) {
  FAILED += 1;
  console.log(`FAIL: ${e?.stack ?? e}`);
}
console.log("REPORT " + JSON.stringify(report));
console.log(`${PASSED} passed, ${FAILED} failed`);
process.exitCode = FAILED ? 1 : 0;
