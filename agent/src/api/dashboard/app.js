// The Ganger dashboard: reads this agent's API (/v1/peers, /v1/cores,
// /v1/tasks, /v1/services, /v1/events) with the user's bearer token and
// draws the mesh. Nothing here is trusted by the agent: every call is
// checked by the API like any client's. No framework, no build step.
// core.js (the API, the token) and tasks.js (the task list) load first.
"use strict";
(() => {
  const { $, el, api, getJson, problem, askToken, setToken, showTokenState, later, cell } =
    window.ganger;
  const tasks = window.ganger.tasks;
  const MAX_EVENTS = 300; // events kept in the feed
  const SLOW_MS = 5000; // peers (load) refresh; everything else without events
  const SAFETY_MS = 30000; // full refresh of the visible parts with events live
  const COMPACT = 12; // more peers than this: drawn small

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

  // ---- services ----------------------------------------------------------
  function imageText(img) {
    if (!img || img === "present") return img ? "present" : "";
    if (img.pulling) return `pulling ${img.pulling.layers_done}/${img.pulling.layers}`;
    if (img.failed) return `failed: ${img.failed}`;
    return JSON.stringify(img);
  }
  /** A service's mode as meshctl writes it (the API's JSON has the enum's name). */
  function modeText(mode) {
    return { PerConnection: "per-connection", Pool: "pool" }[mode] || mode;
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
            cell(modeText(spec.mode)),
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
          tr.append(cell(spec.name), cell(modeText(spec.mode)), cell(spec.listen), cell(`${node} (no answer)`));
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
      tasks.onEvent(ev);
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
    tasks.refresh();
    refreshServices();
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
      tasks.refresh();
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
    tasks.wire();
    refreshAll();
    followEvents();
    setInterval(tick, SLOW_MS);
  }

  wire();
})();
