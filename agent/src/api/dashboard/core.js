// The Ganger dashboard's shared parts: the API with the user's bearer
// token, the problems line, the token form, and small DOM helpers. Loaded
// first; tasks.js and app.js use them through `window.ganger`.
"use strict";
window.ganger = (() => {
  const TOKEN_KEY = "ganger.token";
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

  // Refreshes asked by events: each at most once a second.
  const soon = new Map(); // what -> timer
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


  function cell(text, cls) {
    return el("td", cls, text);
  }

  return { $, el, api, getJson, problem, askToken, setToken, showTokenState, later, cell };
})();
