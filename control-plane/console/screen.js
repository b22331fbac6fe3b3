// Draws rendered screens (`screen_frame` / `screen_diff` from a
// `render=screen` stream) and keeps that stream open. The terminal is
// emulated on the server; here are only rows of styled runs and a cursor.

import { sessionPath, wsUrl } from "./api.js";

const BASE16 = [
  "#1e1e1e", "#cd3131", "#0dbc79", "#e5e510", "#2472c8", "#bc3fbc", "#11a8cd", "#e5e5e5",
  "#666666", "#f14c4c", "#23d18b", "#f5f543", "#3b8eea", "#d670d6", "#29b8db", "#ffffff",
];

function palette(i) {
  if (i < 16) return BASE16[i];
  if (i < 232) {
    const n = i - 16;
    const level = (v) => (v === 0 ? 0 : 55 + v * 40);
    const r = level(Math.floor(n / 36)), g = level(Math.floor(n / 6) % 6), b = level(n % 6);
    return "rgb(" + r + "," + g + "," + b + ")";
  }
  const v = 8 + (i - 232) * 10;
  return "rgb(" + v + "," + v + "," + v + ")";
}

function css(color) {
  if (color === undefined || color === null) return null;
  if (typeof color === "number") return palette(color);
  return "rgb(" + color[0] + "," + color[1] + "," + color[2] + ")";
}

function span(run, text) {
  const el = document.createElement("span");
  el.textContent = text;
  let fg = css(run.fg), bg = css(run.bg);
  if (run.inverse) {
    [fg, bg] = [bg || "var(--term-bg)", fg || "var(--term-fg)"];
  }
  if (fg) el.style.color = fg;
  if (bg) el.style.backgroundColor = bg;
  if (run.bold) el.style.fontWeight = "bold";
  if (run.italic) el.style.fontStyle = "italic";
  if (run.underline) el.style.textDecoration = "underline";
  return el;
}

/// One terminal screen in the page.
export class ScreenView {
  constructor(parent, label) {
    this.el = document.createElement("div");
    this.el.className = "term";
    this.el.setAttribute("role", "log");
    this.el.setAttribute("aria-label", label || "terminal");
    parent.appendChild(this.el);
    this.rows = [];
    this.rowEls = [];
    this.size = { cols: 80, rows: 24 };
    this.cursor = { row: 0, col: 0, visible: false };
    this.offset = 0;
  }

  setSize(size) {
    this.size = size;
    this.el.style.setProperty("--cols", String(size.cols));
    this.el.style.setProperty("--rows", String(size.rows));
    this.rows = new Array(size.rows).fill(null).map(() => []);
    this.el.replaceChildren();
    this.rowEls = this.rows.map((_, i) => {
      const row = document.createElement("div");
      row.className = "row";
      row.dataset.row = String(i);
      this.el.appendChild(row);
      return row;
    });
  }

  /// Applies a `screen_frame` or `screen_diff` message.
  apply(msg) {
    const dirty = new Set([this.cursor.row]);
    if (msg.type === "screen_frame") {
      this.setSize(msg.size);
      for (let i = 0; i < this.rows.length; i++) dirty.add(i);
    }
    for (const row of msg.rows) {
      if (row.row < this.rows.length) {
        this.rows[row.row] = row.runs;
        dirty.add(row.row);
      }
    }
    this.cursor = msg.cursor;
    this.offset = msg.offset;
    dirty.add(this.cursor.row);
    for (const i of dirty) this.draw(i);
  }

  draw(i) {
    const el = this.rowEls[i];
    if (!el) return;
    const runs = this.rows[i] || [];
    const parts = [];
    const showCursor = this.cursor.visible && this.cursor.row === i;
    let col = 0;
    let placed = false;
    for (const run of runs) {
      const chars = Array.from(run.text);
      if (showCursor && !placed && this.cursor.col >= col && this.cursor.col < col + chars.length) {
        const at = this.cursor.col - col;
        if (at > 0) parts.push(span(run, chars.slice(0, at).join("")));
        const cur = span(run, chars[at]);
        cur.classList.add("cursor");
        parts.push(cur);
        if (at + 1 < chars.length) parts.push(span(run, chars.slice(at + 1).join("")));
        placed = true;
      } else {
        parts.push(span(run, run.text));
      }
      col += chars.length;
    }
    if (showCursor && !placed) {
      if (this.cursor.col > col) parts.push(span({}, " ".repeat(this.cursor.col - col)));
      const cur = span({}, " ");
      cur.classList.add("cursor");
      parts.push(cur);
    }
    el.replaceChildren(...parts);
  }

  /// The screen's rows as plain text, trailing blanks removed.
  text() {
    return this.rowEls.map((el) => el.textContent.replace(/\s+$/, ""));
  }
}

const HELLO = { type: "hello", protocol_version: 1, peer: "paddock-console/0.1", capabilities: [] };

/// A `render=screen` session stream that reconnects until the session ends.
export class ScreenStream {
  constructor({ sandbox, session, mode, take, handlers }) {
    this.sandbox = sandbox;
    this.session = session;
    this.mode = mode || "watch";
    this.take = !!take;
    this.handlers = handlers || {};
    this.closed = false;
    this.ended = false;
    this.backoff = 500;
    this.ws = null;
  }

  open() {
    let q = "?mode=" + this.mode + "&render=screen";
    if (this.take) q += "&take=true";
    const ws = new WebSocket(wsUrl(sessionPath(this.sandbox, this.session) + "/stream" + q));
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    ws.onopen = () => ws.send(JSON.stringify(HELLO));
    ws.onmessage = (ev) => {
      if (typeof ev.data !== "string") return;
      const msg = JSON.parse(ev.data);
      this.backoff = 500;
      if (msg.type === "exited") this.ended = true;
      if (msg.type === "error") {
        this.ended = true;
      }
      const handler = this.handlers[msg.type] || this.handlers.other;
      if (handler) handler(msg);
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      if (this.handlers.close) this.handlers.close(ev, this.ended || this.closed);
      if (this.closed || this.ended) return;
      const wait = this.backoff;
      this.backoff = Math.min(this.backoff * 2, 5000);
      this.timer = setTimeout(() => this.open(), wait);
    };
    return this;
  }

  /// Sends keystrokes as one binary input frame (17-byte header, then bytes).
  sendInput(bytes) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN || bytes.length === 0) return false;
    const frame = new Uint8Array(17 + bytes.length);
    const view = new DataView(frame.buffer);
    frame[0] = 2;
    view.setBigUint64(1, BigInt(this.session), true);
    view.setBigUint64(9, 0n, true);
    frame.set(bytes, 17);
    this.ws.send(frame);
    return true;
  }

  sendResize(cols, rows) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return;
    this.ws.send(JSON.stringify({ type: "resize", size: { cols, rows } }));
  }

  close() {
    this.closed = true;
    clearTimeout(this.timer);
    if (this.ws) this.ws.close(1000, "page left");
  }
}
