// The console's entry point: sign-in check, the hash router, and the one
// events WebSocket that pages subscribe to for live updates.

import * as api from "./api.js";
import { failure } from "./dom.js";
import { pages } from "./pages.js";
import { sessionPage } from "./session.js";

const main = document.getElementById("main");
let cleanup = null;

// One /v1/events socket for the whole console, reopened when it drops.
const listeners = new Set();
let events = null;
let eventsBackoff = 500;

function openEvents() {
  if (events || !api.current()) return;
  const ws = new WebSocket(api.wsUrl("/v1/events"));
  events = ws;
  ws.onmessage = (ev) => {
    eventsBackoff = 500;
    let event;
    try {
      event = JSON.parse(ev.data);
    } catch (_) {
      return;
    }
    for (const fn of listeners) fn(event);
  };
  ws.onclose = () => {
    if (events !== ws) return;
    events = null;
    if (!api.current()) return;
    setTimeout(openEvents, eventsBackoff);
    eventsBackoff = Math.min(eventsBackoff * 2, 5000);
  };
}

export function onEvent(fn) {
  listeners.add(fn);
  openEvents();
  return () => listeners.delete(fn);
}

function closeEvents() {
  const ws = events;
  events = null;
  if (ws) ws.close(1000, "signed out");
}

function route() {
  const hash = location.hash.replace(/^#\/?/, "");
  const [path, query] = hash.split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { parts, query: new URLSearchParams(query || "") };
}

async function render() {
  if (cleanup) {
    try {
      cleanup();
    } catch (_) {
      /* a page's teardown must not stop the next page */
    }
    cleanup = null;
  }
  const { parts, query } = route();
  const header = document.querySelector("header.top");
  if (!api.current()) {
    header.hidden = true;
    cleanup = pages.signin(main, { query, onSignedIn: signedIn });
    return;
  }
  header.hidden = false;
  const name = parts[0] || "wall";
  for (const link of document.querySelectorAll("[data-nav]")) {
    if (link.dataset.nav === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  try {
    if (name === "sessions" && parts.length === 3) {
      cleanup = await sessionPage(main, { sandbox: parts[1], session: parts[2], onEvent });
    } else if (name === "tasks" && parts.length === 2) {
      cleanup = await pages.task(main, { id: parts[1], onEvent });
    } else if (pages[name] && name !== "signin" && name !== "task") {
      cleanup = await pages[name](main, { query, onEvent });
    } else {
      failure(main, { status: 404, message: "No such page: #/" + parts.join("/") + ". Use the navigation above." });
    }
  } catch (err) {
    failure(main, err);
  }
  main.focus({ preventScroll: true });
}

function signedIn() {
  const s = api.current();
  document.getElementById("who").textContent = s.token_name + " · " + s.role + " · " + s.tenant_id;
  openEvents();
  if (!location.hash || location.hash.startsWith("#/signin")) location.hash = "#/wall";
  else render();
}

async function start() {
  document.getElementById("signout").addEventListener("click", async () => {
    try {
      await api.signOut();
    } finally {
      closeEvents();
      location.hash = "#/signin";
      render();
    }
  });
  window.addEventListener("hashchange", render);
  try {
    await api.resume();
  } catch (err) {
    failure(main, err);
    return;
  }
  if (api.current()) signedIn();
  else render();
}

start();

