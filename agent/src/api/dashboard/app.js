// The Ganger dashboard: reads this agent's API (/v1/peers, /v1/cores,
// /v1/tasks, /v1/services, /v1/events) with the user's bearer token and
// draws the mesh. Nothing here is trusted by the agent: every call is
// checked by the API like any client's. No framework, no build step.
"use strict";
(() => {
  const TOKEN_KEY = "ganger.token";
  const PAGE = 50; // task rows shown
  const SCAN = 500; // tasks asked per call while a filter is set
  const MAX_SCANS = 20; // calls per filtered page at most
  const MAX_EVENTS = 300; // events kept in the feed
  const MAX_LOG = 256 * 1024; // characters of output kept on screen
  const SLOW_MS = 5000; // peers (load) refresh; everything else without events
  const SAFETY_MS = 30000; // full refresh of the visible parts with events live
  const COMPACT = 12; // more peers than this: drawn small

  const $ = (id) => document.getElementById(id);
  const el = (tag, cls, text) => {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  };

  let token = sessionStorage.getItem(TOKEN_KEY) || "";

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  // One call of the API with the token; a non-2xx answer throws its
  // status and the agent's `error` text. A 401 asks for a token.
  async function api(path, opts = {}) {
    const headers = Object.assign({}, opts.headers || {});
    if (token) headers.Authorization = "Bearer " + token;
    const res = await fetch(path, Object.assign({ cache: "no-store" }, opts, { headers }));
    if (!res.ok) {
      let msg = res.statusText;
      try {
        const body = await res.json();
        if (body && body.error) msg = body.error;
      } catch (_) {
        /* not JSON: keep the status text */
      }
      if (res.status === 401) askToken(msg);
      throw new ApiError(res.status, `${res.status}: ${msg}`);
    }
    return res;
  }
  const getJson = async (path) => (await api(path)).json();

  // ---- problems and the token ---------------------------------------
  const problems = new Map();
  function problem(key, msg) {
    if (msg) problems.set(key, msg);
    else problems.delete(key);
    const box = $("problem");
    box.hidden = problems.size === 0;
    box.textContent = [...problems.entries()].map(([k, m]) => `${k}: ${m}`).join("\n");
  }

  function showTokenState() {
    const s = $("token-status");
    s.textContent = token ? "token set" : "no token";
    s.className = "pill " + (token ? "ok" : "off");
  }
  function askToken(why) {
    $("token-why").textContent =
      `This agent's API asks for a bearer token (${why}). It is kept in this tab only (sessionStorage).`;
    $("token-form").hidden = false;
  }
  function setToken(value) {
    token = value.trim();
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
    showTokenState();
  }

  // ---- the mesh: peers and their cores -------------------------------
  let peers = [];
  const cores = new Map(); // node -> [CoreUse]
  const cards = new Map(); // node -> {root, parts}

  function peerState(p) {
    // Unknown states (a newer agent's) are shown as they come.
    return typeof p.state === "string" ? p.state : "unknown";
  }

  function card(node) {
    let c = cards.get(node);
    if (c) return c;
    const root = el("div", "peer");
    root.dataset.node = node;
    const head = el("div");
    const name = el("span", "name", node);
    const state = el("span", "state");
    const drain = el("span", "state draining", "draining");
    head.append(name, state, drain);
    const meta = el("div", "meta");
    const load = el("div", "meta");
    const numas = el("div", "numas");
    root.append(head, meta, load, numas);
    c = { root, state, drain, meta, load, numas, key: "" };
    cards.set(node, c);
    return c;
  }

  // The cores of one peer grouped by NUMA node: what /v1/cores says, else
  // the gossiped shape with every core unknown.
  function numaGroups(p) {
    const known = cores.get(p.node);
    if (known && peerState(p) !== "dead") {
      const groups = [];
      for (const c of known) {
        (groups[c.numa] = groups[c.numa] || []).push(c);
      }
      return groups.filter(Boolean);
    }
    const shape = (p.info && p.info.topology && p.info.topology.cores_per_numa) || [];
    return shape.map((n, numa) =>
      Array.from({ length: Math.min(n, 1024) }, (_, i) => ({ core: i, numa, kind: "unknown" })),
    );
  }

  function coreTitle(c) {
    if (c.kind === "task") return `core ${c.core}: task ${c.holder}`;
    if (c.kind === "service" || c.kind === "warm")
      return `core ${c.core}: ${c.kind} ${c.service || ""} (${c.holder})`;
    return `core ${c.core}: ${c.kind}`;
  }

  function drawPeer(p) {
    const c = card(p.node);
    const state = peerState(p);
    const info = p.info || {};
    const draining = !!info.draining;
    c.root.className = `peer ${state}${draining ? " draining" : ""}${p.is_self ? " self" : ""}`;
    c.state.textContent = state;
    c.state.className = `state ${state}`;
    c.drain.hidden = !draining;
    c.meta.textContent = [info.version, p.is_self ? "this agent" : "", p.error || ""]
      .filter(Boolean)
      .join(" · ");
    const load = info.load || {};
    const total = ((info.topology && info.topology.cores_per_numa) || []).reduce((a, b) => a + b, 0);
    const free = (load.free_per_numa || []).reduce((a, b) => a + b, 0);
    const pulling = (info.images && info.images.pulling) || 0;
    const groups = numaGroups(p);
    // Cores held as /v1/cores saw them (newer than the gossip's figure).
    const known = groups.flat().filter((x) => x.kind !== "unknown");
    const held = known.length ? known.filter((x) => x.kind !== "free").length : total - free;
    c.root.dataset.running = String(load.running || 0);
    c.load.textContent =
      (state === "dead" ? "last heard: " : "") +
      `${load.running || 0} running · ${load.queued || 0} queued · ` +
      `cpu ${load.cpu_percent || 0}% · ${held}/${total} cores held` +
      (pulling ? ` · pulling ${pulling}` : "");
    const key = JSON.stringify(groups.map((g) => g.map((x) => [x.kind, x.holder || ""])));
    if (key === c.key) return;
    c.key = key;
    const numas = groups.map((g, i) => {
      const box = el("div", "numa");
      box.title = `NUMA node ${i}`;
      for (const x of g) {
        const sq = el("span", `core ${x.kind}`);
        sq.title = coreTitle(x);
        box.append(sq);
      }
      return box;
    });
    c.numas.replaceChildren(...numas);
  }

  function drawMesh() {
    const mesh = $("mesh");
    mesh.classList.toggle("compact", peers.length > COMPACT);
    const sorted = [...peers].sort((a, b) => (a.node < b.node ? -1 : a.node > b.node ? 1 : 0));
    const seen = new Set();
    sorted.forEach((p, i) => {
      drawPeer(p);
      seen.add(p.node);
      const root = cards.get(p.node).root;
      if (mesh.children[i] !== root) mesh.insertBefore(root, mesh.children[i] || null);
    });
    for (const [node, c] of cards) {
      if (!seen.has(node)) {
        c.root.remove();
        cards.delete(node);
      }
    }
    const counts = {};
    for (const p of peers) counts[peerState(p)] = (counts[peerState(p)] || 0) + 1;
    const self = peers.find((p) => p.is_self);
    $("here").textContent = self ? `at ${self.node}` : "";
    $("summary").textContent =
      `${peers.length} peers: ` +
      Object.entries(counts)
        .map(([s, n]) => `${n} ${s}`)
        .join(", ");
  }

  async function refreshPeers() {
    try {
      peers = await getJson("/v1/peers");
      problem("peers", null);
      drawMesh();
    } catch (e) {
      problem("peers", e.message);
    }
  }

  async function refreshCores() {
    try {
      const mc = await getJson("/v1/cores");
      const live = new Set();
      for (const n of mc.nodes || []) {
        cores.set(n.node, n.cores);
        live.add(n.node);
      }
      for (const node of [...cores.keys()]) if (!live.has(node)) cores.delete(node);
      problem("cores", null);
      drawMesh();
    } catch (e) {
      problem("cores", e.status === 404 ? "this agent has no /v1/cores" : e.message);
    }
  }

  // ---- tasks -----------------------------------------------------------
  const pages = { cursor: null, back: [], next: null, rows: [], note: "" };
  let selected = null;

  function filters() {
    return { state: $("f-state").value, node: $("f-node").value.trim(), owner: $("f-owner").value.trim() };
  }
  function matches(t, f) {
    return (!f.state || t.state === f.state) && (!f.node || t.node === f.node) && (!f.owner || t.owner === f.owner);
  }

  // One page of PAGE tasks after `cursor` that pass the filters: without a
  // filter one call; with one, calls of SCAN until the page is full (at
  // most MAX_SCANS, then the page says so).
  async function loadPage() {
    const f = filters();
    const filtering = !!(f.state || f.node || f.owner);
    let after = pages.cursor;
    const rows = [];
    let next = null;
    let note = "";
    for (let scans = 0; ; scans++) {
      const q = new URLSearchParams({ limit: String(filtering ? SCAN : PAGE) });
      if (after) q.set("after", after);
      const res = await api(`/v1/tasks?${q}`);
      const batch = await res.json();
      const more = res.headers.get("mesh-next-after");
      let full = false;
      let rest = false; // tasks of this answer after the page's last
      for (let i = 0; i < batch.length; i++) {
        if (!matches(batch[i], f)) continue;
        rows.push(batch[i]);
        if (rows.length === PAGE) {
          full = true;
          rest = i < batch.length - 1;
          break;
        }
      }
      if (full) {
        next = rest || more ? rows[rows.length - 1].id : null;
        break;
      }
      if (!more) break;
      after = more;
      if (scans + 1 >= MAX_SCANS) {
        next = more;
        note = `looked through ${scans + 1} calls; more may match`;
        break;
      }
    }
    pages.rows = rows;
    pages.next = next;
    pages.note = note;
    drawTasks();
  }

  // The last page (the newest tasks: ids sort by creation): pages of SCAN
  // from the current one to the end, keeping only the last PAGE matches
  // and the id before each (the cursor that starts a page at it).
  async function lastPage() {
    const f = filters();
    let after = pages.cursor;
    let prev = after;
    let tail = [];
    for (let scans = 0; scans < 100; scans++) {
      const q = new URLSearchParams({ limit: String(SCAN) });
      if (after) q.set("after", after);
      const res = await api(`/v1/tasks?${q}`);
      for (const t of await res.json()) {
        if (matches(t, f)) {
          tail.push(prev);
          if (tail.length > PAGE) tail = tail.slice(-PAGE);
        }
        prev = t.id;
      }
      after = res.headers.get("mesh-next-after");
      if (!after) break;
    }
    if (tail.length && tail[0] !== pages.cursor) {
      pages.back.push(pages.cursor);
      pages.cursor = tail[0];
    }
    await loadPage();
  }

  async function refreshTasks() {
    try {
      await loadPage();
      problem("tasks", null);
    } catch (e) {
      problem("tasks", e.message);
    }
  }

  function cell(text, cls) {
    return el("td", cls, text);
  }
  function taskRow(t) {
    const tr = el("tr");
    tr.dataset.id = t.id;
    if (t.id === selected) tr.classList.add("selected");
    const st = el("span", `st ${t.state}`, t.pull && t.state === "starting" ? "pulling" : t.state);
    const stCell = el("td");
    stCell.append(st);
    const alloc = t.allocation ? t.allocation.cores.join(",") : "";
    tr.append(
      cell(t.id, "id"),
      cell((t.spec && t.spec.name) || ""),
      stCell,
      cell(t.node),
      cell(alloc ? `${alloc}` : `(${t.spec ? t.spec.cores : "?"})`),
      cell(t.attempt),
      cell(t.owner || ""),
    );
    return tr;
  }
  function drawTasks() {
    $("tasks").tBodies[0].replaceChildren(...pages.rows.map(taskRow));
    const n = pages.rows.length;
    $("page-info").textContent =
      `${n} shown${pages.back.length ? `, page ${pages.back.length + 1}` : ""}` +
      (pages.next ? "; more follow" : "") +
      (pages.note ? ` (${pages.note})` : "");
    $("page-next").disabled = !pages.next;
    $("page-last").disabled = !pages.next;
    $("page-prev").disabled = pages.back.length === 0;
  }

  // A task the events named: refetched alone, and its row replaced.
  async function refreshTask(id) {
    try {
      const t = await getJson(`/v1/tasks/${encodeURIComponent(id)}`);
      const i = pages.rows.findIndex((r) => r.id === id);
      if (i >= 0) {
        pages.rows[i] = t;
        drawTasks();
      }
      if (id === selected) {
        drawDetail(t);
        problem("task", null);
      }
    } catch (e) {
      if (id === selected) problem("task", e.message);
    }
  }

  // ---- one task: details, live output, kill ----------------------------
  let logAbort = null;

  function field(dl, name, value) {
    if (value === undefined || value === null || value === "") return;
    dl.append(el("dt", null, name), el("dd", null, value));
  }
  const when = (ms) => (ms ? new Date(ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z") : "");

  function drawDetail(t) {
    $("d-id").textContent = t.id;
    const dl = $("d-fields");
    dl.replaceChildren();
    const spec = t.spec || {};
    field(dl, "state", t.state);
    field(dl, "node", t.node);
    field(dl, "attempt", t.attempt);
    field(dl, "owner", t.owner);
    field(dl, "name", spec.name);
    field(dl, "image", spec.image);
    field(dl, "command", (spec.command || []).join(" "));
    field(dl, "cores", t.allocation ? `${t.allocation.cores.join(",")} (cpus ${JSON.stringify(t.allocation.cpus)})` : spec.cores);
    field(dl, "keeper", t.keeper);
    field(dl, "container", t.container);
    field(dl, "exit code", t.exit_code);
    field(dl, "message", t.message);
    if (t.pull) field(dl, "pulling", `${t.pull.layers_done}/${t.pull.layers} layers, ${t.pull.bytes_done}/${t.pull.bytes} bytes`);
    field(dl, "created", when(t.created_ms));
    field(dl, "started", when(t.started_ms));
    field(dl, "finished", when(t.finished_ms));
    for (const a of t.also_running || []) field(dl, "also running", JSON.stringify(a));
  }

  async function followLogs(id) {
    if (logAbort) logAbort.abort();
    const abort = new AbortController();
    logAbort = abort;
    const pre = $("d-logs");
    const state = $("d-logs-state");
    pre.textContent = "";
    state.textContent = "(following)";
    try {
      const res = await api(`/v1/tasks/${encodeURIComponent(id)}/logs?follow=true`, { signal: abort.signal });
      const reader = res.body.getReader();
      const text = new TextDecoder();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        let s = pre.textContent + text.decode(value, { stream: true });
        if (s.length > MAX_LOG) s = "[...]\n" + s.slice(s.length - MAX_LOG);
        pre.textContent = s;
        pre.scrollTop = pre.scrollHeight;
      }
      if (logAbort === abort) state.textContent = "(ended)";
    } catch (e) {
      if (logAbort === abort && e.name !== "AbortError") state.textContent = `(${e.message})`;
    }
  }

  async function select(id) {
    selected = id;
    problem("task", null);
    $("detail-section").hidden = false;
    $("d-refusal").hidden = true;
    for (const tr of $("tasks").tBodies[0].rows) tr.classList.toggle("selected", tr.dataset.id === id);
    await refreshTask(id);
    followLogs(id);
  }

  async function kill() {
    if (!selected) return;
    const id = selected;
    const box = $("d-refusal");
    try {
      await api(`/v1/tasks/${encodeURIComponent(id)}/kill`, { method: "POST" });
      box.hidden = true;
      refreshTask(id);
    } catch (e) {
      box.textContent = `kill refused: ${e.message}`;
      box.hidden = false;
    }
  }

  // ---- services ----------------------------------------------------------
  function imageText(img) {
    if (!img || img === "present") return img ? "present" : "";
    if (img.pulling) return `pulling ${img.pulling.layers_done}/${img.pulling.layers}`;
    if (img.failed) return `failed: ${img.failed}`;
    return JSON.stringify(img);
  }
  async function refreshServices() {
    try {
      const list = await getJson("/v1/services");
      const rows = [];
      for (const v of list) {
        const spec = (v.def && v.def.spec) || {};
        for (const n of v.nodes || []) {
          const l = n.load || {};
          const k = n.counters || {};
          const tr = el("tr");
          tr.append(
            cell(spec.name),
            cell(spec.mode),
            cell(spec.listen),
            cell(n.node + (n.listening ? "" : " (not listening)")),
            cell(l.containers),
            cell(l.ready),
            cell(l.conns),
            cell(l.queued),
            cell(k.served),
            cell(k.refused),
            cell(k.failed_starts),
            cell(imageText(n.image)),
          );
          rows.push(tr);
        }
        for (const node of v.unreachable || []) {
          const tr = el("tr");
          tr.append(cell(spec.name), cell(spec.mode), cell(spec.listen), cell(`${node} (no answer)`));
          rows.push(tr);
        }
      }
      $("services").tBodies[0].replaceChildren(...rows);
      problem("services", null);
    } catch (e) {
      problem("services", e.message);
    }
  }

  // ---- events: a live feed and targeted refreshes --------------------------
  let eventsLive = false;
  const soon = new Map(); // what -> timer: refreshes asked by events, at most one a second
  function later(what, fn) {
    if (soon.has(what)) return;
    soon.set(
      what,
      setTimeout(() => {
        soon.delete(what);
        fn();
      }, 1000),
    );
  }

  function onEvent(ev) {
    const list = $("events");
    const li = el("li");
    const time = new Date(ev.time_ms || Date.now()).toISOString().slice(11, 19);
    li.append(
      el("span", "muted", `${time} ${ev.node || ""} `),
      el("span", "kind", ev.kind || "?"),
      document.createTextNode(` ${ev.subject || ""}${ev.reason ? ": " + ev.reason : ""}`),
    );
    list.prepend(li);
    while (list.children.length > MAX_EVENTS) list.lastChild.remove();

    const kind = String(ev.kind || "");
    if (kind.startsWith("task-")) {
      if (ev.subject && (pages.rows.some((r) => r.id === ev.subject) || ev.subject === selected)) {
        later(`task ${ev.subject}`, () => refreshTask(ev.subject));
      } else if (!pages.next) {
        later("tasks", refreshTasks); // a new task lands on the last page
      }
      later("cores", refreshCores);
      later("peers", refreshPeers);
    } else if (kind.startsWith("peer-")) {
      later("peers", refreshPeers);
      later("cores", refreshCores);
    } else if (kind.startsWith("service-") || kind.startsWith("container-") || kind.startsWith("connection-")) {
      later("services", refreshServices);
      later("cores", refreshCores);
    }
  }

  // Splits a server-sent event stream into events: blocks end with an
  // empty line; `data:` lines of a block are joined with newlines.
  function sseBlocks(buffer, emit) {
    const parts = buffer.split(/\r?\n\r?\n/);
    const rest = parts.pop();
    for (const block of parts) {
      const data = block
        .split(/\r?\n/)
        .filter((l) => l.startsWith("data:"))
        .map((l) => l.slice(5).replace(/^ /, ""))
        .join("\n");
      if (!data) continue;
      try {
        emit(JSON.parse(data));
      } catch (_) {
        /* not an event we can read: skip it */
      }
    }
    return rest;
  }

  function eventsStatus(text, live) {
    const s = $("events-status");
    s.textContent = `events: ${text}`;
    s.className = "pill " + (live ? "ok" : "off");
  }

  async function followEvents() {
    let retry = 3000;
    try {
      const res = await api("/v1/events?follow=true", { headers: { Accept: "text/event-stream" } });
      eventsLive = true;
      eventsStatus("live", true);
      const reader = res.body.getReader();
      const text = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer = sseBlocks(buffer + text.decode(value, { stream: true }), onEvent);
      }
      eventsStatus("reconnecting", false);
    } catch (e) {
      if (e.status === 404) {
        eventsStatus("not available", false);
        retry = 60000; // an agent without the stream: ask again now and then
      } else {
        eventsStatus(e.status === 401 ? "need a token" : "reconnecting", false);
      }
    }
    eventsLive = false;
    setTimeout(followEvents, retry);
  }

  // ---- the clock -------------------------------------------------------------
  function refreshAll() {
    refreshPeers();
    refreshCores();
    refreshTasks();
    refreshServices();
    if (selected) refreshTask(selected);
  }

  let ticks = 0;
  function tick() {
    if (document.hidden) return;
    ticks++;
    refreshPeers();
    // Without events, the visible parts are asked again each tick; with
    // them, events ask what changed and this is a slow safety net.
    if (!eventsLive || ticks % (SAFETY_MS / SLOW_MS) === 0) {
      refreshCores();
      refreshTasks();
      if (selected) refreshTask(selected);
    }
    // Connections and counters change without events: every other tick.
    if (!eventsLive || ticks % 2 === 0) refreshServices();
  }

  function wire() {
    showTokenState();
    $("token-edit").onclick = () => askToken("enter or replace it");
    $("token-forget").onclick = () => {
      setToken("");
    };
    $("token-cancel").onclick = () => {
      $("token-form").hidden = true;
    };
    $("token-form").onsubmit = (e) => {
      e.preventDefault();
      setToken($("token-input").value);
      $("token-input").value = "";
      $("token-form").hidden = true;
      $("d-refusal").hidden = true;
      refreshAll();
    };
    $("tasks").tBodies[0].onclick = (e) => {
      const tr = e.target.closest("tr");
      if (tr && tr.dataset.id) select(tr.dataset.id);
    };
    $("d-kill").onclick = kill;
    $("d-close").onclick = () => {
      selected = null;
      problem("task", null);
      if (logAbort) logAbort.abort();
      $("detail-section").hidden = true;
      drawTasks();
    };
    const restart = () => {
      pages.cursor = null;
      pages.back = [];
      refreshTasks();
    };
    $("page-first").onclick = restart;
    $("page-next").onclick = () => {
      if (!pages.next) return;
      pages.back.push(pages.cursor);
      pages.cursor = pages.next;
      refreshTasks();
    };
    $("page-prev").onclick = () => {
      if (!pages.back.length) return;
      pages.cursor = pages.back.pop();
      refreshTasks();
    };
    $("page-last").onclick = () =>
      lastPage().then(
        () => problem("tasks", null),
        (e) => problem("tasks", e.message),
      );
    for (const id of ["f-state", "f-node", "f-owner"]) $(id).onchange = restart;
    refreshAll();
    followEvents();
    setInterval(tick, SLOW_MS);
  }

  wire();
})();
