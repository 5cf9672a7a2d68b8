// The HTTP API (the README lists it): /api/models, /api/templates, /api/chat (SSE), /api/sandbox,
// /api/auth/*, /api/conversations. Every call carries the bearer token the session keeps.
import { loadTokens, saveTokens } from "./session.js";
import { readEventStream } from "./sse.js";

function authHeaders() {
  const tokens = loadTokens();
  return tokens?.access_token ? { Authorization: `Bearer ${tokens.access_token}` } : {};
}

let refreshing = null;

/** Swap the refresh token for a new pair (once at a time); false when it no longer works. */
export async function refreshTokens() {
  const tokens = loadTokens();
  if (!tokens?.refresh_token) return false;
  refreshing ??= (async () => {
    try {
      const response = await fetch("/api/auth/refresh", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ refresh_token: tokens.refresh_token }),
      });
      if (!response.ok) return false;
      const pair = await response.json();
      saveTokens({ ...tokens, ...pair });
      return true;
    } catch {
      return false;
    } finally {
      refreshing = null;
    }
  })();
  return refreshing;
}

/** fetch with the bearer token; a 401 refreshes the tokens and tries once more. */
async function authFetch(url, init = {}) {
  const go = () => fetch(url, { ...init, headers: { ...(init.headers || {}), ...authHeaders() } });
  let response = await go();
  if (response.status === 401 && loadTokens()?.refresh_token && (await refreshTokens())) {
    response = await go();
  }
  return response;
}

/** An HTTP or stream failure carrying the server's one-sentence `detail`. */
export class ApiError extends Error {
  constructor(detail, { status = 0, code = "", retryAfter = null } = {}) {
    super(detail);
    this.name = "ApiError";
    this.detail = detail;
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

async function errorFrom(response) {
  let code = "";
  let detail = "";
  try {
    const body = await response.json();
    code = typeof body.error === "string" ? body.error : "";
    detail = typeof body.detail === "string" ? body.detail : "";
  } catch {
    // Not JSON (a proxy's error page): fall back to the status line.
  }
  if (!detail) {
    detail = `The server answered ${response.status}${response.statusText ? ` ${response.statusText}` : ""}.`;
  }
  const retry = response.headers.get("Retry-After");
  return new ApiError(detail, {
    status: response.status,
    code,
    retryAfter: retry ? Number(retry) || retry : null,
  });
}

async function getJSON(url) {
  let response;
  try {
    response = await authFetch(url, { headers: { Accept: "application/json" } });
  } catch {
    throw new ApiError("Could not reach the server.");
  }
  if (!response.ok) throw await errorFrom(response);
  return response.json();
}

export const getModels = () => getJSON("/api/models");
export const getTemplates = () => getJSON("/api/templates");
export const getStatus = () => getJSON("/api/status");

async function post(url, body, { signal, accept = "application/json", method = "POST" } = {}) {
  let response;
  try {
    response = await authFetch(url, {
      method,
      headers: { "Content-Type": "application/json", Accept: accept },
      body: JSON.stringify(body),
      signal,
    });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError("Could not reach the server. Check that it is running and try again.");
  }
  if (!response.ok) throw await errorFrom(response);
  return response;
}

/**
 * POST /api/chat and call onEvent({event, data}) for each SSE event until the stream closes.
 * Pre-stream failures reject with ApiError (status set); abort rejects with AbortError.
 */
export async function streamChat(body, { signal, onEvent }) {
  const response = await post("/api/chat", body, { signal, accept: "text/event-stream" });
  try {
    await readEventStream(response, onEvent);
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError("The connection to the server was lost while the answer was streaming.");
  }
}

/**
 * POST /api/sandbox asking for phase events; resolves with the result object.
 * A server that answers plain JSON is accepted too.
 */
export async function runSandbox(body, { signal, onPhase }) {
  const response = await post("/api/sandbox", body, { signal, accept: "text/event-stream" });
  const type = response.headers.get("Content-Type") || "";
  if (!type.includes("text/event-stream")) return response.json();
  let result = null;
  let failure = null;
  await readEventStream(response, ({ event, data }) => {
    if (event === "phase") onPhase?.(data?.phase ?? String(data));
    else if (event === "result") result = data;
    else if (event === "error") {
      const detail = (data && (data.detail || data.value)) || "The sandbox failed.";
      failure = new ApiError(detail, { code: data?.error || data?.name || "" });
    }
  });
  if (failure) throw failure;
  if (!result) throw new ApiError("The sandbox closed the connection without a result.");
  return result;
}

/**
 * POST /api/sandbox with `Prefer: respond-async`: {jobId} at once, the run going on as a job
 * followed over /api/ws (lib/live.js); {result} from a server that answered with the result.
 */
export async function startSandboxJob(body, { signal } = {}) {
  let response;
  try {
    response = await authFetch("/api/sandbox", {
      method: "POST",
      headers: {
        "Content-Type": "application/json",
        Accept: "application/json",
        Prefer: "respond-async",
      },
      body: JSON.stringify(body),
      signal,
    });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError("Could not reach the server. Check that it is running and try again.");
  }
  if (!response.ok) throw await errorFrom(response);
  const data = await response.json();
  return response.status === 202 && data?.job_id ? { jobId: data.job_id } : { result: data };
}

/**
 * POST /api/sandbox/prepare: the conversation's sandbox for `template`, made ready while the
 * model still writes the fragment: {sandbox_id, template, url}, or null (204) when the backend
 * does not prepare that template. Rejects with ApiError like the other calls.
 */
export async function prepareSandbox(body, { signal } = {}) {
  return jsonOrNull(await post("/api/sandbox/prepare", body, { signal }));
}

async function jsonOrNull(response) {
  return response.status === 204 ? null : response.json();
}

const call = async (method, url, body) =>
  jsonOrNull(await post(url, body, { method }));

// ---- accounts -------------------------------------------------------------------------------

export const signUp = (email, password, guestToken) =>
  call("POST", "/api/auth/signup", { email, password, guest_token: guestToken || undefined });
export const logIn = (email, password) => call("POST", "/api/auth/login", { email, password });
export const startGuest = () => call("POST", "/api/auth/guest", {});
export const getMe = () => getJSON("/api/auth/me");
export const switchTeam = (teamId) => call("POST", "/api/auth/switch-team", { team_id: teamId });
export const logOut = (refreshToken) =>
  call("POST", "/api/auth/logout", refreshToken ? { refresh_token: refreshToken } : undefined);

// ---- conversations --------------------------------------------------------------------------

export const listConversations = (offset = 0) =>
  getJSON(`/api/conversations?limit=50&offset=${offset}`);
export const createConversation = (title) => call("POST", "/api/conversations", { title });
export const getConversation = (id) => getJSON(`/api/conversations/${encodeURIComponent(id)}`);
export const patchConversation = (id, change) =>
  call("PATCH", `/api/conversations/${encodeURIComponent(id)}`, change);
export const deleteConversation = (id) =>
  call("DELETE", `/api/conversations/${encodeURIComponent(id)}`);
export const resendTurn = (id, turn) =>
  call("POST", `/api/conversations/${encodeURIComponent(id)}/turns`, turn);

// ---- usage ----------------------------------------------------------------------------------

/** This calendar month's tokens and cost for the caller (`month` of GET /api/usage). */
export const getUsage = () => getJSON("/api/usage?days=1");
/** A team's budget, used and remaining (team admins only). */
export const getBudget = (teamId) => getJSON(`/api/teams/${encodeURIComponent(teamId)}/budget`);

// ---- operators ------------------------------------------------------------------------------

/** The operator view's figures (GET /api/admin/overview): 401 nobody, 403 not an operator. */
export const getAdminOverview = (days) => getJSON(`/api/admin/overview?days=${days}`);

// ---- workspace: versions, data files, ZIP, publish -------------------------------------------

const conv = (id) => `/api/conversations/${encodeURIComponent(id)}`;
export const listVersions = (id) => getJSON(`${conv(id)}/versions`);
export const undoLast = (id, fragmentId) =>
  call("POST", `${conv(id)}/undo`, fragmentId ? { fragment_id: fragmentId } : {});
export const restoreVersion = (id, fragmentId) =>
  call("POST", `${conv(id)}/versions/${encodeURIComponent(fragmentId)}/restore`, {});
/** Store code edited by hand as the conversation's new current version. */
export const saveHandEdit = (id, body) => call("POST", `${conv(id)}/versions`, body);
export const listFiles = (id) => getJSON(`${conv(id)}/files`);
export const deleteFile = (id, name) =>
  call("DELETE", `${conv(id)}/files/${encodeURIComponent(name)}`);
export const publish = (sandboxId, duration) =>
  call("POST", "/api/publish", { sandbox_id: sandboxId, duration });

/** POST a data file's bytes (a File) into the conversation; resolves with its listing. */
export async function uploadFile(id, file) {
  let response;
  try {
    response = await authFetch(`${conv(id)}/files?name=${encodeURIComponent(file.name)}`, {
      method: "POST",
      headers: { "Content-Type": "application/octet-stream", Accept: "application/json" },
      body: file,
    });
  } catch {
    throw new ApiError("Could not reach the server.");
  }
  if (!response.ok) throw await errorFrom(response);
  return response.json();
}

/** The project as a ZIP Blob and its file name: a stored version, or the fragment itself. */
export async function downloadZip({ conversationId, fragmentId, fragment }) {
  let response;
  try {
    response = conversationId && fragmentId
      ? await authFetch(`${conv(conversationId)}/versions/${encodeURIComponent(fragmentId)}/download`)
      : await authFetch("/api/export", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ fragment }),
      });
  } catch {
    throw new ApiError("Could not reach the server.");
  }
  if (!response.ok) throw await errorFrom(response);
  const disposition = response.headers.get("Content-Disposition") || "";
  const name = /filename="([^"]+)"/.exec(disposition)?.[1] || "fragment.zip";
  return { blob: await response.blob(), name };
}
