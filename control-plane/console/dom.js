// Small DOM helpers shared by the pages: element building, messages, formats.

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (key === "text") el.textContent = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.appendChild(typeof child === "string" || typeof child === "number" ? document.createTextNode(String(child)) : child);
  }
  return el;
}

export function toast(message) {
  const el = document.getElementById("toast");
  el.textContent = message;
  el.classList.add("shown");
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => el.classList.remove("shown"), 5000);
}

export function dollars(micros) {
  return "$" + (Number(micros || 0) / 1e6).toFixed(2);
}

export function when(text) {
  if (!text) return "";
  const d = new Date(text);
  return isNaN(d) ? text : d.toLocaleString();
}

/// A table with a header row; `rows` are arrays of cells (nodes or text).
export function table(caption, headers, rows, empty) {
  if (rows.length === 0) return h("p", { class: "empty" }, empty || "Nothing here.");
  return h("div", { class: "table-wrap" },
    h("table", {},
      h("caption", { class: "sr-only" }, caption),
      h("thead", {}, h("tr", {}, headers.map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, rows.map((cells) => h("tr", {}, cells.map((c) => h("td", {}, c)))))));
}

export function badge(state) {
  return h("span", { class: "badge state-" + state }, state.replace(/_/g, " "));
}

/// A page-level error: the message and what to do next.
export function failure(main, err) {
  main.replaceChildren(h("section", { class: "page" },
    h("h1", {}, err && err.status === 404 ? "Not found" : "Something went wrong"),
    h("p", { class: "error", role: "alert" }, String(err && err.message || err))));
}
