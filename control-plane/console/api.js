// The console's one door to the control plane: JSON requests carrying the
// session's CSRF token, and WebSocket URLs on the same origin. The session
// cookie itself is HttpOnly: scripts never see it.

let session = null;

export function current() {
  return session;
}

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function parse(response) {
  if (response.status === 204) return null;
  const text = await response.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch (_) {
    body = null;
  }
  if (!response.ok) {
    const err = body && body.error ? body.error : { code: "http_" + response.status, message: text || response.statusText };
    throw new ApiError(response.status, err.code, err.message);
  }
  return body;
}

export async function call(method, path, body) {
  const headers = { "accept": "application/json" };
  if (body !== undefined) headers["content-type"] = "application/json";
  if (session && method !== "GET") headers["x-paddock-csrf"] = session.csrf_token;
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
    cache: "no-store",
  });
  return parse(response);
}

export const get = (path) => call("GET", path);
export const post = (path, body) => call("POST", path, body === undefined ? {} : body);

/// The signed-in session, or null when the cookie is missing or ended.
export async function resume() {
  try {
    session = await get("/v1/console/session");
  } catch (err) {
    if (err.status === 401 || err.status === 404) {
      session = null;
    } else {
      throw err;
    }
  }
  return session;
}

export async function signIn(token) {
  session = await post("/v1/console/session", { token });
  return session;
}

export async function signOut() {
  try {
    await call("DELETE", "/v1/console/session");
  } finally {
    session = null;
  }
}

export function wsUrl(path) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return scheme + "//" + location.host + path;
}

export function sessionPath(sandbox, id) {
  return "/v1/sandboxes/" + encodeURIComponent(sandbox) + "/sessions/" + encodeURIComponent(id);
}

/// Roles that may watch live terminals (the server checks again).
export function mayWatch() {
  return !!session && ["owner", "admin", "operator", "developer"].includes(session.role);
}

/// Roles that may type into a session (the server checks again).
export function mayAttach() {
  return !!session && ["owner", "admin", "developer"].includes(session.role);
}

export function mayApprove() {
  return !!session && ["owner", "admin", "operator", "developer"].includes(session.role);
}

export function mayCancel() {
  return !!session && ["owner", "admin", "operator", "developer", "agent"].includes(session.role);
}
