// The HTTP API as DESIGN.md pins it: /api/models, /api/templates, /api/chat (SSE), /api/sandbox.
import { readEventStream } from "./sse.js";

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
    response = await fetch(url, { headers: { Accept: "application/json" } });
  } catch {
    throw new ApiError("Could not reach the server.");
  }
  if (!response.ok) throw await errorFrom(response);
  return response.json();
}

export const getModels = () => getJSON("/api/models");
export const getTemplates = () => getJSON("/api/templates");

async function post(url, body, { signal, accept }) {
  let response;
  try {
    response = await fetch(url, {
      method: "POST",
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
