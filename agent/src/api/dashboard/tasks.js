// The dashboard's tasks: a page of the list (filters, paging), one task's
// details with its output followed live, and kill. Uses core.js
// (`window.ganger`); app.js calls `ganger.tasks`.
"use strict";
window.ganger.tasks = (() => {
  const { $, el, api, getJson, problem, later, cell } = window.ganger;
  const PAGE = 50; // task rows shown
  const SCAN = 500; // tasks asked per call while a filter is set
  const MAX_SCANS = 20; // calls per filtered page at most
  const MAX_LOG = 256 * 1024; // characters of output kept on screen

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

  // An event about a task: the task alone when it is shown, else the page
  // when it is the last (where a new task lands).
  function onEvent(ev) {
    if (ev.subject && (pages.rows.some((r) => r.id === ev.subject) || ev.subject === selected)) {
      later(`task ${ev.subject}`, () => refreshTask(ev.subject));
    } else if (!pages.next) {
      later("tasks", refreshTasks);
    }
  }

  // The visible parts asked again: the page, and the task shown.
  function refresh() {
    refreshTasks();
    if (selected) refreshTask(selected);
  }

  function wire() {
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
  }

  return { wire, refresh, onEvent };
})();
