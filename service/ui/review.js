// The review page: one item of GET /review at a time, its label sent to POST /feedback.
// Plain JavaScript, no build step, nothing loaded from another host.
"use strict";

const TOKEN_KEY = "livetune.token"; // sessionStorage: this tab only, gone when it closes
const NAME_KEY = "livetune.reviewer"; // localStorage: a name is no secret
const BATCH = 10;
const MAX_MATCHES = 30;

const $ = (id) => document.getElementById(id);
const state = { items: [], current: null, labels: [], labeled: 0, remaining: 0, busy: false };

function token() { return sessionStorage.getItem(TOKEN_KEY); }
function reviewer() { return localStorage.getItem(NAME_KEY) || ""; }

function show(which) {
  for (const id of ["setup", "item", "empty"]) $(id).hidden = id !== which;
}

function say(text) {
  $("message").textContent = text || "";
  $("message").hidden = !text;
}

class Refused extends Error {}

async function call(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  const sent = token();
  if (sent) headers.authorization = `Bearer ${sent}`;
  const response = await fetch(path, { ...options, headers });
  let body = null;
  try { body = await response.json(); } catch { /* not JSON: say the status */ }
  if (response.status === 401 || response.status === 403) {
    sessionStorage.removeItem(TOKEN_KEY);
    let reason = "This service needs an access token with the feedback scope.";
    if (response.status === 403) {
      reason = "That token may not review (403): it needs the feedback scope. Enter another.";
    } else if (sent) {
      reason = "That token was not accepted (401): check it and enter it again.";
    }
    throw new Refused(reason);
  }
  if (!response.ok) {
    const why = body && body.error ? body.error : `HTTP ${response.status}`;
    throw new Error(why);
  }
  return body;
}

function askSetup(message) {
  say(message);
  $("name").value = reviewer();
  $("token-field").hidden = !(message || token());
  show("setup");
  (reviewer() ? $("token") : $("name")).focus();
}

async function fetchItems() {
  const query = new URLSearchParams({ limit: String(BATCH), source: reviewer() });
  const answer = await call(`/review?${query}`);
  state.items = answer.items;
  state.labels = answer.labels;
  $("adapter").textContent = answer.adapter;
  $("accuracy").textContent = answer.online_accuracy === null
    ? "–" : `${(answer.online_accuracy * 100).toFixed(1)}%`;
  state.remaining = answer.remaining;
}

function showRemaining() {
  $("remaining").textContent = String(state.remaining + state.items.length);
}

async function next() {
  if (!state.items.length) {
    try {
      await fetchItems();
    } catch (error) {
      return error instanceof Refused ? askSetup(error.message) : say(error.message);
    }
  }
  state.current = state.items.shift() || null;
  showRemaining();
  if (!state.current) return show("empty");
  render(state.current);
}

function render(item) {
  say("");
  $("text").textContent = item.text;
  $("item-adapter").textContent = item.adapter;
  const served = new Date(item.served_at * 1000);
  $("served").dateTime = served.toISOString();
  $("served").textContent = served.toLocaleString();
  const list = $("suggestions");
  list.replaceChildren(...item.top.slice(0, 9).map((pair, index) => {
    const button = labelButton(pair.label);
    button.prepend(Object.assign(document.createElement("kbd"), { textContent: index + 1 }));
    button.append(Object.assign(document.createElement("span"), {
      className: "score", textContent: `${(pair.score * 100).toFixed(0)}%`,
    }));
    const entry = document.createElement("li");
    entry.appendChild(button);
    return entry;
  }));
  $("search").value = "";
  $("matches").replaceChildren();
  show("item");
  list.querySelector("button").focus();
}

function labelButton(label) {
  const button = document.createElement("button");
  button.type = "button";
  button.dataset.label = label;
  button.append(Object.assign(document.createElement("span"), {
    className: "label", textContent: label,
  }));
  button.addEventListener("click", () => send(label));
  return button;
}

async function send(label) {
  if (state.busy || !state.current) return;
  state.busy = true;
  const sample = { prediction_id: state.current.prediction_id, label, source: reviewer() };
  try {
    await call("/feedback", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ samples: [sample] }),
    });
    state.labeled += 1;
    $("labeled").textContent = String(state.labeled);
    state.current = null;
    await next();
  } catch (error) {
    if (error instanceof Refused) askSetup(error.message);
    else say(`Not saved: ${error.message}`);
  } finally {
    state.busy = false;
  }
}

function matches(text) {
  const needle = text.trim().toLowerCase();
  if (!needle) return [];
  return state.labels.filter((label) => label.toLowerCase().includes(needle)).slice(0, MAX_MATCHES);
}

function onSearch() {
  const found = matches($("search").value);
  $("matches").replaceChildren(...found.map((label) => {
    const item = document.createElement("li");
    item.appendChild(labelButton(label));
    return item;
  }));
}

function onKey(event) {
  if ($("item").hidden || event.ctrlKey || event.metaKey || event.altKey) return;
  const typing = event.target instanceof HTMLInputElement;
  if (event.key === "Enter") {
    if (event.target instanceof HTMLButtonElement) return; // the button's own click
    const choice = typing ? matches($("search").value)[0] : state.current?.top[0]?.label;
    if (choice) { event.preventDefault(); send(choice); }
    return;
  }
  if (typing) return;
  if (/^[1-9]$/.test(event.key)) {
    const pair = state.current?.top[Number(event.key) - 1];
    if (pair) { event.preventDefault(); send(pair.label); }
  } else if (event.key === "s" || event.key === "S") {
    event.preventDefault();
    state.current = null;
    next();
  } else if (event.key === "/") {
    event.preventDefault();
    $("search").focus();
  }
}

function onSetup(event) {
  event.preventDefault();
  const name = $("name").value.trim();
  if (!name) return say("Please enter your name.");
  localStorage.setItem(NAME_KEY, name);
  const entered = $("token").value.trim();
  if (entered) sessionStorage.setItem(TOKEN_KEY, entered);
  $("token").value = "";
  say("");
  next();
}

document.addEventListener("DOMContentLoaded", () => {
  $("setup").addEventListener("submit", onSetup);
  $("search").addEventListener("input", onSearch);
  $("skip").addEventListener("click", () => { state.current = null; next(); });
  $("again").addEventListener("click", () => next());
  document.addEventListener("keydown", onKey);
  if (reviewer()) next(); else askSetup("");
});
