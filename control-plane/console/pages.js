// The console's pages but the session view: sign-in, the wall of live
// terminals, tasks (list and detail), approvals, agents and the audit log.
// Each page function fills `main` and returns its teardown.

import * as api from "./api.js";
import { h, toast, dollars, when, table, badge } from "./dom.js";
import { ScreenView, ScreenStream } from "./screen.js";

function page(main, title, ...children) {
  main.replaceChildren(h("section", { class: "page", "aria-labelledby": "page-title" },
    h("h1", { id: "page-title" }, title), ...children));
  return main.firstChild;
}

/// Calls `fn` at most once per `ms`, after the last of a burst of calls.
function debounce(fn, ms) {
  let timer = null;
  return () => {
    clearTimeout(timer);
    timer = setTimeout(fn, ms);
  };
}

function sessionLink(sandbox, id, text) {
  return h("a", { href: "#/sessions/" + encodeURIComponent(sandbox) + "/" + id }, text || "session " + id);
}

function taskLink(id) {
  return h("a", { href: "#/tasks/" + encodeURIComponent(id) }, id);
}

function signin(main, { query, onSignedIn }) {
  const failedLink = query.get("failed") === "link";
  const input = h("input", { id: "token", name: "token", type: "password", autocomplete: "off", required: true, "aria-describedby": "token-help" });
  const error = h("p", { class: "error", role: "alert", id: "signin-error" },
    failedLink ? "That sign-in link's token is invalid, expired or revoked. Paste a valid API token below." : "");
  const form = h("form", { class: "signin", onsubmit: async (ev) => {
    ev.preventDefault();
    error.textContent = "";
    try {
      await api.signIn(input.value);
      input.value = "";
      onSignedIn();
    } catch (err) {
      error.textContent = err.status === 401
        ? "That token is invalid, expired or revoked. Check it, or ask an admin for a new one."
        : String(err.message);
    }
  } },
  h("label", { for: "token" }, "API token"),
  input,
  h("p", { id: "token-help", class: "help" }, "A token from `paddock` or your admin (it starts with pdk_). It is exchanged for a session cookie and not kept in this page."),
  h("button", { type: "submit", id: "signin-submit" }, "Sign in"),
  error);
  page(main, "Sign in to Paddock", form);
  input.focus();
  return null;
}

// ---- Wall ----------------------------------------------------------------

async function wall(main, { onEvent }) {
  const grid = h("div", { class: "wall", id: "wall" });
  const count = h("p", { class: "help", id: "wall-count", "aria-live": "polite" });
  page(main, "Live sessions", count,
    api.mayWatch() ? null : h("p", { class: "help" }, "Your role may list sessions but not watch them; ask an admin for an operator or developer token."),
    grid);
  const tiles = new Map(); // "sandbox/session" → { tile, stream, info }
  let sandboxes = new Map();
  let tasks = [];

  function taskOf(sandboxId, sessionId) {
    return tasks.find((t) => (t.results || []).some((r) => r.session_id === sessionId)) ||
      tasks.find((t) => t.sandbox_id === sandboxId && t.state === "running");
  }

  function caption(entry) {
    const { info } = entry;
    const sb = sandboxes.get(info.sandbox_id);
    const task = taskOf(info.sandbox_id, info.id);
    entry.meta.replaceChildren(
      h("span", { class: "sandbox" }, sb ? sb.name : info.sandbox_id),
      h("span", {}, " #" + info.id + " "),
      h("span", { class: "cmd" }, info.command ? [info.command].concat(info.args || []).join(" ") : "shell"),
      h("br"),
      task ? h("span", { class: "task" }, "task " + task.id + " · agent " + task.agent) : h("span", { class: "task muted" }, "no task"),
      " ",
      badge(entry.state || info.state));
  }

  function update() {
    const n = tiles.size;
    count.textContent = n === 0 ? "No live sessions. Sessions appear here as they start." : n + " live session" + (n === 1 ? "" : "s");
  }

  function remove(key) {
    const entry = tiles.get(key);
    if (!entry) return;
    entry.stream.close();
    entry.tile.remove();
    tiles.delete(key);
    update();
  }

  function add(info) {
    const key = info.sandbox_id + "/" + info.id;
    if (tiles.has(key) || (info.state !== "running" && info.state !== "starting")) return;
    const meta = h("div", { class: "meta" });
    const tile = h("a", { class: "tile", href: "#/sessions/" + encodeURIComponent(info.sandbox_id) + "/" + info.id,
      dataset: { sandbox: info.sandbox_id, session: String(info.id) } }, meta);
    const entry = { tile, meta, info, state: info.state };
    if (!api.mayWatch()) {
      // Listed but not watchable for this role: no stream to open.
      entry.stream = { close() {} };
      tiles.set(key, entry);
      caption(entry);
      grid.appendChild(tile);
      update();
      return;
    }
    const view = new ScreenView(tile, "screen of session " + info.id);
    entry.view = view;
    // Monospace cells are about 0.6 em wide: size the font so every column fits the tile.
    const fit = (cols) => {
      const px = (tile.clientWidth - 12) / (cols * 0.61);
      view.el.style.fontSize = Math.max(3, Math.min(10, px)).toFixed(2) + "px";
    };
    entry.stream = new ScreenStream({ sandbox: info.sandbox_id, session: info.id, mode: "watch", handlers: {
      screen_frame: (m) => {
        fit(m.size.cols);
        view.apply(m);
      },
      screen_diff: (m) => view.apply(m),
      exited: () => remove(key),
      error: () => remove(key),
    } }).open();
    tiles.set(key, entry);
    caption(entry);
    grid.appendChild(tile);
    update();
  }

  async function load() {
    const [list, running] = await Promise.all([api.get("/v1/sandboxes"), api.get("/v1/tasks?state=running")]);
    sandboxes = new Map(list.sandboxes.map((s) => [s.id, s]));
    tasks = running.tasks;
    const lists = await Promise.all(list.sandboxes.map((s) =>
      api.get("/v1/sandboxes/" + encodeURIComponent(s.id) + "/sessions").catch(() => ({ sessions: [] }))));
    for (const l of lists) for (const s of l.sessions) add(s);
    for (const entry of tiles.values()) caption(entry);
    update();
  }

  const refreshTasks = debounce(async () => {
    try {
      tasks = (await api.get("/v1/tasks?state=running")).tasks;
      for (const entry of tiles.values()) caption(entry);
    } catch (_) {
      /* the next event tries again */
    }
  }, 200);

  await load();
  const off = onEvent(async (event) => {
    if (event.kind === "session.opened" && event.sandbox_id && event.session_id !== undefined) {
      try {
        if (!sandboxes.has(event.sandbox_id)) {
          const sb = await api.get("/v1/sandboxes/" + encodeURIComponent(event.sandbox_id));
          sandboxes.set(sb.id, sb);
        }
        add(await api.get(api.sessionPath(event.sandbox_id, event.session_id)));
        refreshTasks();
      } catch (_) {
        /* gone already */
      }
    } else if (event.kind === "session.closed") {
      remove(event.sandbox_id + "/" + event.session_id);
    } else if (event.kind === "sandbox.lost") {
      for (const entry of tiles.values()) {
        if (entry.info.sandbox_id === event.sandbox_id) {
          entry.state = "disconnected";
          caption(entry);
        }
      }
    } else if (event.kind.startsWith("task.")) {
      refreshTasks();
    }
  });
  return () => {
    off();
    for (const key of [...tiles.keys()]) remove(key);
  };
}

// ---- Tasks ---------------------------------------------------------------

const STATES = ["pending", "awaiting_approval", "running", "retrying", "succeeded", "failed", "timed_out", "cancelled", "rejected"];
const FINAL = new Set(["succeeded", "failed", "timed_out", "cancelled", "rejected"]);

function cancelButton(task, after) {
  if (FINAL.has(task.state) || !api.mayCancel()) return null;
  return h("button", { type: "button", class: "danger", dataset: { cancel: task.id }, onclick: async () => {
    if (!confirm("Cancel task " + task.id + "?")) return;
    try {
      await api.post("/v1/tasks/" + encodeURIComponent(task.id) + "/cancel", { reason: "cancelled from the console" });
      toast("Task " + task.id + " cancelled");
      after();
    } catch (err) {
      toast("Could not cancel: " + err.message);
    }
  } }, "Cancel");
}

async function tasks(main, { query, onEvent }) {
  const state = h("select", { id: "filter-state" }, h("option", { value: "" }, "any state"),
    STATES.map((s) => h("option", { value: s }, s.replace(/_/g, " "))));
  state.value = query.get("state") || "";
  const agent = h("input", { id: "filter-agent", type: "search", placeholder: "agent name" });
  agent.value = query.get("agent") || "";
  const list = h("div", { id: "task-list" });
  const filters = h("form", { class: "filters", role: "search", onsubmit: (ev) => ev.preventDefault() },
    h("label", { for: "filter-state" }, "State "), state, " ",
    h("label", { for: "filter-agent" }, "Agent "), agent);
  page(main, "Tasks", filters, list);
  async function load() {
    const q = state.value ? "?state=" + state.value : "";
    const { tasks: all } = await api.get("/v1/tasks" + q);
    const wanted = all.filter((t) => !agent.value || t.agent.includes(agent.value.trim()));
    list.replaceChildren(table("Tasks", ["Task", "Agent", "State", "Attempt", "Sandbox", "Created", ""],
      wanted.map((t) => [taskLink(t.id), t.agent, badge(t.state), String(t.attempt), t.sandbox_id || "", when(t.created_at),
        cancelButton(t, reload) || ""]),
      "No tasks match these filters."));
  }
  const reload = debounce(() => load().catch((err) => toast(err.message)), 150);
  state.addEventListener("change", reload);
  agent.addEventListener("input", reload);
  await load();
  const off = onEvent((e) => e.kind.startsWith("task.") && reload());
  return off;
}

async function task(main, { id, onEvent }) {
  let stream = null;
  let pending = null;
  const body = h("div");
  page(main, "Task " + id, body);
  async function load() {
    const [t, { events }] = await Promise.all([
      api.get("/v1/tasks/" + encodeURIComponent(id)),
      api.get("/v1/tasks/" + encodeURIComponent(id) + "/events"),
    ]);
    const running = t.state === "running" ? (t.results || []).filter((r) => r.session_id !== undefined && !r.exit).pop() : null;
    const output = h("div", { class: "task-output" });
    body.replaceChildren(
      h("dl", { class: "facts" },
        h("dt", {}, "State"), h("dd", { id: "task-state" }, badge(t.state)),
        h("dt", {}, "Agent"), h("dd", {}, t.agent),
        h("dt", {}, "Attempt"), h("dd", {}, String(t.attempt) + " of " + t.retry.attempts),
        h("dt", {}, "Sandbox"), h("dd", {}, t.sandbox_id || "not yet"),
        h("dt", {}, "Reason"), h("dd", {}, t.reason || "")),
      h("p", {}, cancelButton(t, load) || ""),
      h("h2", {}, "Steps"),
      h("ol", {}, t.steps.map((s, i) => {
        const result = (t.results || []).filter((r) => r.step === i + 1).pop();
        return h("li", {}, h("code", {}, s.kind === "run" ? [s.command].concat(s.args || []).join(" ") : s.call.tool),
          result && result.session_id !== undefined && t.sandbox_id ? [" · ", sessionLink(t.sandbox_id, result.session_id)] : "",
          result && result.exit ? " · exit " + JSON.stringify(result.exit) : "",
          result && result.error ? h("span", { class: "error" }, " · " + result.error) : "");
      })),
      ...(running ? [h("h2", {}, "Live output of step " + running.step), output] : []),
      h("h2", {}, "Events"),
      table("Task events", ["At", "Event", "Detail"], events.map((e) => [when(e.at), e.kind, h("code", {}, JSON.stringify(e.detail))]), "No events yet."));
    if (stream) stream.close();
    stream = null;
    clearTimeout(pending);
    // A step's session is recorded just after it starts: look again soon.
    if (!running && !FINAL.has(t.state)) pending = setTimeout(reload, 500);
    if (running) {
      const view = new ScreenView(output, "output of step " + running.step);
      stream = new ScreenStream({ sandbox: t.sandbox_id, session: running.session_id, mode: "watch", handlers: {
        screen_frame: (m) => view.apply(m), screen_diff: (m) => view.apply(m) } }).open();
    }
  }
  const reload = debounce(() => load().catch((err) => toast(err.message)), 150);
  await load();
  const off = onEvent((e) => e.task_id === id && reload());
  return () => {
    off();
    clearTimeout(pending);
    if (stream) stream.close();
  };
}

// ---- Approvals -------------------------------------------------------------

async function approvals(main, { onEvent }) {
  const list = h("div", { id: "approval-list" });
  page(main, "Approvals", h("p", { class: "help" }, "Tasks of restricted agents wait here until someone approves or rejects them."), list);
  async function decide(t, verdict) {
    try {
      await api.post("/v1/tasks/" + encodeURIComponent(t.id) + "/" + verdict, { reason: verdict + "d from the console" });
      toast("Task " + t.id + (verdict === "approve" ? " approved" : " rejected"));
      await load();
    } catch (err) {
      toast("Could not " + verdict + ": " + err.message);
    }
  }
  async function load() {
    const { tasks: waiting } = await api.get("/v1/tasks?state=awaiting_approval");
    const allowed = api.mayApprove();
    list.replaceChildren(table("Tasks awaiting approval", ["Task", "Agent", "Steps", "Submitted", ""],
      waiting.map((t) => [taskLink(t.id), t.agent,
        h("code", {}, t.steps.map((s) => (s.kind === "run" ? [s.command].concat(s.args || []).join(" ") : s.call.tool)).join("; ")),
        when(t.created_at),
        allowed ? h("span", { class: "actions" },
          h("button", { type: "button", dataset: { approve: t.id }, onclick: () => decide(t, "approve") }, "Approve"), " ",
          h("button", { type: "button", class: "danger", dataset: { reject: t.id }, onclick: () => decide(t, "reject") }, "Reject"))
          : "your role may not decide"]),
      "No task is waiting for approval."));
  }
  const reload = debounce(() => load().catch((err) => toast(err.message)), 150);
  await load();
  return onEvent((e) => e.kind.startsWith("task.") && reload());
}

// ---- Agents ----------------------------------------------------------------

function meter(label, used, limit, format) {
  const fmt = format || String;
  const pct = limit > 0 ? Math.min(100, Math.round((used / limit) * 100)) : 0;
  return h("div", { class: "meter" },
    h("span", {}, label + ": " + fmt(used) + " of " + fmt(limit)),
    h("progress", { max: "100", value: String(pct), "aria-label": label + " used, percent" }));
}

async function agents(main) {
  const list = h("div", { class: "agents", id: "agent-list" });
  page(main, "Agents", list);
  const { agents: all } = await api.get("/v1/agents");
  if (all.length === 0) {
    list.replaceChildren(h("p", { class: "empty" }, "No agents yet. Create one with `paddock agents create NAME`."));
    return null;
  }
  const statuses = await Promise.all(all.map((a) => api.get("/v1/agents/" + encodeURIComponent(a.name))));
  list.replaceChildren(...statuses.map((s) => h("article", { class: "card", dataset: { agent: s.agent.name } },
    h("h2", {}, s.agent.name, s.restricted ? h("span", { class: "badge state-restricted" }, "restricted") : ""),
    h("p", { class: "score" }, "Reputation ", h("strong", {}, String(s.reputation))),
    meter("Budget this hour", s.used.spent_hourly_micros, s.limits.budget_hourly_micros, dollars),
    meter("Budget today", s.used.spent_daily_micros, s.limits.budget_daily_micros, dollars),
    h("p", {}, "Rate limits left: " + s.left.pushes + " pushes this hour, " + s.left.executions + " task runs today"),
    h("details", {}, h("summary", {}, "Recent reputation events"),
      table("Reputation events", ["At", "Outcome", "Change", "Score", "Reason"],
        s.reputation_events.map((e) => [new Date(e.at_ms).toLocaleString(), e.outcome, (e.delta > 0 ? "+" : "") + e.delta, String(e.score_after), e.reason || ""]),
        "No reputation events yet.")))));
  return null;
}

// ---- Audit -------------------------------------------------------------------

async function audit(main) {
  const filter = h("input", { id: "audit-filter", type: "search", placeholder: "action, actor or resource" });
  const list = h("div", { id: "audit-list" });
  page(main, "Audit log", h("form", { class: "filters", role: "search", onsubmit: (ev) => ev.preventDefault() },
    h("label", { for: "audit-filter" }, "Filter "), filter), list);
  const { events } = await api.get("/v1/audit?limit=500");
  function draw() {
    const q = filter.value.trim().toLowerCase();
    const rows = events.filter((e) => !q || [e.action, e.actor, e.resource, e.role].some((v) => String(v).toLowerCase().includes(q)));
    list.replaceChildren(table("Audit events", ["At", "Actor", "Role", "Action", "Resource", "Detail"],
      rows.map((e) => [when(e.at), e.actor, e.role, e.action, e.resource, h("code", {}, JSON.stringify(e.detail))]),
      "No audit events match."));
  }
  filter.addEventListener("input", draw);
  draw();
  return null;
}

export const pages = { signin, wall, tasks, task, approvals, agents, audit };
