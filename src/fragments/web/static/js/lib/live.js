// Sandbox runs followed over the WebSocket /api/ws (docs/websocket.md): the run is started as a
// job (POST /api/sandbox with `Prefer: respond-async`), its phases and result come over the
// socket, and the job is remembered in sessionStorage so that a reload re-attaches to it (from
// the last event seen) instead of running the fragment again. When the socket cannot open, the
// run falls back to the SSE answer of POST /api/sandbox.
import { ApiError, refreshTokens, runSandbox, startSandboxJob } from "./api.js";
import { loadTokens } from "./session.js";

const JOB = "fragments.sandboxJob";
const OPEN_TIMEOUT_MS = 4000;
// A socket lost mid-run (a restarted or killed server process) is opened again this often.
const RETRIES = 8;
const RETRY_DELAY_MS = 750;

/** The running job remembered for a reload: {jobId, conversationId, after, phase} or null. */
export function loadSandboxJob() {
  try {
    return JSON.parse(sessionStorage.getItem(JOB) || "null");
  } catch {
    return null;
  }
}

function saveSandboxJob(job) {
  try {
    if (job) sessionStorage.setItem(JOB, JSON.stringify(job));
    else sessionStorage.removeItem(JOB);
  } catch {
    // Storage off: the run still works, a reload just runs the fragment again.
  }
}

const abortError = () => new DOMException("The run was aborted.", "AbortError");

/** Open /api/ws and sign in with the session's token (sent in the first frame, never in the
 * URL); resolves with the socket once the server answers `ready`. */
function openSocket() {
  return new Promise((resolve, reject) => {
    const token = loadTokens()?.access_token;
    if (!token || typeof WebSocket === "undefined") {
      reject(new Error("no token or no WebSocket"));
      return;
    }
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    let socket;
    try {
      socket = new WebSocket(`${scheme}//${location.host}/api/ws`);
    } catch (error) {
      reject(error);
      return;
    }
    const timer = setTimeout(() => {
      socket.close();
      reject(new Error("the socket did not open in time"));
    }, OPEN_TIMEOUT_MS);
    socket.onopen = () => socket.send(JSON.stringify({ type: "auth", token }));
    socket.onmessage = (message) => {
      clearTimeout(timer);
      let frame = null;
      try {
        frame = JSON.parse(message.data);
      } catch {
        // not ours
      }
      socket.onmessage = null;
      socket.onerror = null;
      if (frame?.type === "ready") resolve(socket);
      else {
        socket.close();
        reject(new ApiError(frame?.detail || "The live status was refused.", { code: frame?.error }));
      }
    };
    socket.onerror = () => {
      clearTimeout(timer);
      reject(new Error("the socket did not open"));
    };
  });
}

/** Follow one job on an open socket until its result (resolves), its error (rejects with
 * ApiError) or the socket closing (rejects with {lost: true}). */
function followOn(socket, job, { signal, onPhase }) {
  return new Promise((resolve, reject) => {
    const stop = () => {
      socket.onmessage = null;
      socket.onclose = null;
      signal?.removeEventListener("abort", aborted);
    };
    const aborted = () => {
      stop();
      socket.close();
      reject(abortError());
    };
    signal?.addEventListener("abort", aborted);
    socket.onmessage = (message) => {
      let frame;
      try {
        frame = JSON.parse(message.data);
      } catch {
        return;
      }
      if (frame.job_id !== job.jobId) return;
      if (frame.id) job.after = frame.id;
      if (frame.type === "phase") {
        job.phase = frame.phase;
        saveSandboxJob(job);
        onPhase?.(frame.phase);
        return;
      }
      stop();
      socket.close();
      if (frame.type === "result") {
        const { type: _t, job_id: _j, id: _i, at: _a, ...result } = frame;
        resolve(result);
      } else {
        reject(new ApiError(frame.detail || "The sandbox failed.", { code: frame.error || "" }));
      }
    };
    socket.onclose = () => {
      stop();
      reject(Object.assign(new Error("the socket closed"), { lost: true }));
    };
    socket.send(JSON.stringify({ type: "subscribe", job_id: job.jobId, after: job.after || undefined }));
  });
}

// A lost or unopened socket is worth another try; a refusal or the job's own error is not.
const retryable = (error) => error.name !== "AbortError" && !(error instanceof ApiError);

/** Follow a job to its end, opening the socket again (from the last event seen) when it is
 * lost mid-run, as when the server process serving it goes away. */
async function follow(job, { signal, onPhase, socket = null }) {
  for (let attempt = 0; ; attempt += 1) {
    if (signal?.aborted) throw abortError();
    try {
      socket ??= await openSocket();
      return await followOn(socket, job, { signal, onPhase });
    } catch (error) {
      // The access token expired while the job ran (the server checks it at every subscribe
      // and on every new socket): swap it as any API call would, then open a socket again.
      const stale = error instanceof ApiError && error.code === "token_expired";
      if (stale && attempt < RETRIES && (await refreshTokens())) {
        socket = null;
        continue;
      }
      if (!retryable(error) || attempt >= RETRIES) throw error;
      socket = null;
      await new Promise((done) => setTimeout(done, RETRY_DELAY_MS));
    }
  }
}

/** The job is over (or given up): a reload must not re-attach to it. */
async function settle(job, promise) {
  try {
    return await promise;
  } finally {
    if (loadSandboxJob()?.jobId === job.jobId) saveSandboxJob(null);
  }
}

/**
 * Run a fragment with its phases over the WebSocket (`onPhase(phase)`); resolves with the
 * result as POST /api/sandbox answers it. Falls back to the SSE answer when the socket cannot
 * open.
 */
export async function runSandboxLive(body, { signal, onPhase }) {
  let socket;
  try {
    socket = await openSocket();
  } catch {
    return runSandbox(body, { signal, onPhase });
  }
  let started;
  try {
    started = await startSandboxJob(body, { signal });
  } catch (error) {
    socket.close();
    throw error;
  }
  if (started.result) {
    socket.close();
    return started.result;
  }
  const job = { jobId: started.jobId, conversationId: body.conversation_id || null, after: null, phase: "queued" };
  saveSandboxJob(job);
  onPhase?.("queued");
  return settle(job, follow(job, { signal, onPhase, socket }));
}

/**
 * Re-attach to a job remembered before a reload: its last phase at once, then the rest from
 * the last event seen, and its result. If it cannot be followed (expired, the socket refused),
 * the fragment runs again as usual.
 */
export async function reattachSandbox(job, body, { signal, onPhase }) {
  if (job.phase) onPhase?.(job.phase);
  try {
    return await settle(job, follow({ ...job }, { signal, onPhase }));
  } catch (error) {
    if (error.name === "AbortError" || (error.code && error.code !== "not_found")) throw error;
    return runSandboxLive(body, { signal, onPhase });
  }
}
