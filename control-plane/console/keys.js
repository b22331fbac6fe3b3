// Keyboard events to the bytes a terminal sends: printable characters,
// Enter, Backspace, Tab, Escape, arrows, Home/End, PageUp/PageDown, Delete,
// Insert and Ctrl-letters. Returns null for keys the terminal ignores.

const encoder = new TextEncoder();

const NAMED = {
  Enter: "\r",
  Backspace: "\x7f",
  Tab: "\t",
  Escape: "\x1b",
  ArrowUp: "\x1b[A",
  ArrowDown: "\x1b[B",
  ArrowRight: "\x1b[C",
  ArrowLeft: "\x1b[D",
  Home: "\x1b[H",
  End: "\x1b[F",
  PageUp: "\x1b[5~",
  PageDown: "\x1b[6~",
  Delete: "\x1b[3~",
  Insert: "\x1b[2~",
};

export function keyBytes(ev) {
  if (ev.isComposing || ev.metaKey) return null;
  if (ev.key === "Tab" && ev.shiftKey) return encoder.encode("\x1b[Z");
  if (NAMED[ev.key] !== undefined && !ev.ctrlKey) return encoder.encode(NAMED[ev.key]);
  if (ev.ctrlKey && !ev.altKey && ev.key.length === 1) {
    const c = ev.key.toLowerCase();
    if (c >= "a" && c <= "z") return new Uint8Array([c.charCodeAt(0) - 96]);
    const special = { "[": 27, "\\": 28, "]": 29, "^": 30, "_": 31, " ": 0, "@": 0 };
    if (special[c] !== undefined) return new Uint8Array([special[c]]);
    return null;
  }
  if (ev.key.length >= 1 && Array.from(ev.key).length === 1 && !ev.ctrlKey) {
    const text = ev.altKey ? "\x1b" + ev.key : ev.key;
    return encoder.encode(text);
  }
  return null;
}

export function textBytes(text) {
  return encoder.encode(text);
}
