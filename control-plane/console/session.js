// The session page: the full screen live, its metadata, scrollback, the
// asciicast download and — for roles that may — the attach switch that
// types into the session and sizes its PTY to the browser.

import * as api from "./api.js";
import { h, toast, when, badge } from "./dom.js";
import { ScreenView, ScreenStream } from "./screen.js";
import { keyBytes, textBytes } from "./keys.js";

function cellSize(el) {
  const probe = h("span", { class: "probe" }, "MMMMMMMMMM");
  el.appendChild(probe);
  const rect = probe.getBoundingClientRect();
  probe.remove();
  return { w: rect.width / 10 || 8, h: rect.height || 16 };
}

export async function sessionPage(main, { sandbox, session }) {
  let info;
  try {
    info = await api.get(api.sessionPath(sandbox, session));
  } catch (err) {
    if (err.status === 404 || err.status === 400) {
      main.replaceChildren(h("section", { class: "page" },
        h("h1", { id: "page-title" }, "Session not found"),
        h("p", { class: "error", role: "alert" }, "Session " + session + " of sandbox " + sandbox +
          " was not found: it does not exist, or belongs to another tenant. Go back to the wall to pick a live session."),
        h("p", {}, h("a", { href: "#/wall" }, "Back to the wall"))));
      return null;
    }
    throw err;
  }

  const facts = h("dl", { class: "facts", id: "session-facts" });
  const status = h("p", { class: "status", id: "stream-status", "aria-live": "polite" });
  const screenBox = h("div", { class: "screen-box" });
  const attach = api.mayAttach()
    ? h("input", { type: "checkbox", role: "switch", id: "attach", "aria-describedby": "attach-help" })
    : null;
  const controls = h("div", { class: "controls" },
    attach ? h("label", { for: "attach", class: "switch" }, attach, " Attach (type into the session)") : null,
    attach ? h("span", { id: "attach-help", class: "help" }, "While attached, keys typed on the screen go to the session (Ctrl-] leaves the screen) and its terminal follows this window's size.") : null,
    h("a", { href: api.sessionPath(sandbox, session) + "/output?format=asciicast", download: "session-" + session + ".cast", id: "download" }, "Download asciicast"));
  const scrollbackBox = h("div", { id: "scrollback-box" });
  const scrollback = h("details", { id: "scrollback" }, h("summary", {}, "Scrollback"), scrollbackBox);
  main.replaceChildren(h("section", { class: "page session-page" },
    h("h1", { id: "page-title" }, "Session " + session),
    facts, controls, status, screenBox, scrollback));

  const view = new ScreenView(screenBox, "screen of session " + session);
  view.el.id = "screen";
  view.el.tabIndex = 0;
  let stream = null;
  let mode = "watch";

  function showFacts() {
    facts.replaceChildren(
      h("dt", {}, "Sandbox"), h("dd", {}, info.sandbox_id),
      h("dt", {}, "Command"), h("dd", {}, h("code", {}, info.command ? [info.command].concat(info.args || []).join(" ") : "default shell")),
      h("dt", {}, "State"), h("dd", { id: "session-state" }, badge(info.state)),
      h("dt", {}, "Size"), h("dd", {}, info.size.cols + "×" + info.size.rows),
      h("dt", {}, "Started"), h("dd", {}, when(info.created_at)),
      h("dt", {}, "Driver"), h("dd", { id: "session-driver" }, info.driver || "nobody"),
      h("dt", {}, "Output"), h("dd", { id: "session-output" }, String(info.end_offset) + " bytes"));
  }

  // Cheap updates on every frame: only the byte count changes.
  function showOffset(offset) {
    const dd = document.getElementById("session-output");
    if (dd && offset > info.end_offset) {
      info.end_offset = offset;
      dd.textContent = String(offset) + " bytes";
    }
  }
  showFacts();

  function fit() {
    const cell = cellSize(view.el);
    const width = screenBox.clientWidth - 16;
    const height = window.innerHeight - screenBox.getBoundingClientRect().top - 24;
    const cols = Math.max(20, Math.min(1000, Math.floor(width / cell.w)));
    const rows = Math.max(5, Math.min(1000, Math.floor(height / cell.h)));
    return { cols, rows };
  }

  function connect(wanted, take) {
    if (stream) stream.close();
    mode = wanted;
    status.textContent = wanted === "attach" ? "Attaching…" : "Watching live";
    stream = new ScreenStream({ sandbox, session, mode: wanted, take, handlers: {
      welcome: (m) => {
        info = m.session;
        showFacts();
        status.textContent = m.mode === "attach" ? "Attached: keys typed on the screen go to the session" : "Watching live";
        if (m.mode === "attach") {
          const size = fit();
          stream.sendResize(size.cols, size.rows);
          view.el.focus();
        }
      },
      screen_frame: (m) => {
        view.apply(m);
        if (m.size.cols !== info.size.cols || m.size.rows !== info.size.rows) {
          info.size = m.size;
          showFacts();
        }
        showOffset(m.offset);
      },
      screen_diff: (m) => {
        view.apply(m);
        showOffset(m.offset);
      },
      resized: (m) => {
        info.size = m.size;
        showFacts();
      },
      driver_changed: (m) => {
        info.driver = m.driver;
        showFacts();
      },
      mode_changed: (m) => {
        mode = m.mode;
        if (attach) attach.checked = m.mode === "attach";
        status.textContent = m.reason;
      },
      exited: (m) => {
        info.state = "exited";
        showFacts();
        status.textContent = "The session ended (" + JSON.stringify(m.status) + ").";
      },
      error: (m) => {
        status.textContent = m.message;
        if (m.code === "driver_exists" && attach) {
          attach.checked = false;
          status.replaceChildren(m.message + " ", h("button", { type: "button", id: "take", onclick: () => {
            attach.checked = true;
            connect("attach", true);
          } }, "Take over"));
        }
      },
    } }).open();
  }

  if (attach) {
    attach.addEventListener("change", () => connect(attach.checked ? "attach" : "watch", false));
  }
  view.el.addEventListener("keydown", (ev) => {
    if (mode !== "attach" || !stream) return;
    // Tab and Escape belong to the terminal while attached; Ctrl-] (the
    // CLI's detach key) hands the keyboard back to the page.
    if (ev.ctrlKey && ev.key === "]") {
      ev.preventDefault();
      attach.focus();
      return;
    }
    const bytes = keyBytes(ev);
    if (!bytes) return;
    ev.preventDefault();
    stream.sendInput(bytes);
  });
  view.el.addEventListener("paste", (ev) => {
    if (mode !== "attach" || !stream) return;
    ev.preventDefault();
    stream.sendInput(textBytes(ev.clipboardData.getData("text")));
  });
  let resizeTimer = null;
  const onResize = () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => {
      if (mode === "attach" && stream) {
        const size = fit();
        stream.sendResize(size.cols, size.rows);
      }
    }, 150);
  };
  window.addEventListener("resize", onResize);

  scrollback.addEventListener("toggle", async () => {
    if (!scrollback.open) return;
    try {
      const sb = await api.get(api.sessionPath(sandbox, session) + "/scrollback?lines=1000");
      const lines = sb.lines.concat(sb.screen.map((r) => ({ row: r.row + sb.lines.length, runs: r.runs })));
      const past = new ScreenView(scrollbackBox, "scrollback of session " + session);
      scrollbackBox.replaceChildren(past.el);
      past.apply({ type: "screen_frame", offset: sb.offset, size: { cols: view.size.cols, rows: Math.max(1, lines.length) },
        rows: lines, cursor: { row: 0, col: 0, visible: false } });
    } catch (err) {
      toast("Could not load the scrollback: " + err.message);
    }
  });

  if (api.mayWatch()) {
    connect("watch", false);
  } else {
    status.textContent = "Your role may read this session's log (download it above) but not watch it live.";
  }
  return () => {
    window.removeEventListener("resize", onResize);
    if (stream) stream.close();
  };
}
