// Mailed links: "Forgot password?", choosing a new password from a reset link, confirming an
// address from a confirmation link, and "check your mail" after a sign-up that needs one.
import { ApiError } from "../lib/api.js";
import { html, useEffect, useRef, useState, closeDialog, onDialogClosed } from "../lib/html.js";
import { Close } from "./icons.js";

const NOT_SET_UP = "Password reset is not set up on this server; ask its operator.";

/** POST without a bearer token (these routes act for nobody); rejects with ApiError. */
async function postJSON(url, body) {
  let response;
  try {
    response = await fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify(body),
    });
  } catch {
    throw new ApiError("Could not reach the server. Check that it is running and try again.");
  }
  let data = null;
  try {
    data = await response.json();
  } catch {
    // Not JSON (a proxy's error page): the status line below says enough.
  }
  if (!response.ok) {
    throw new ApiError(data?.detail || `The server answered ${response.status}.`, {
      status: response.status,
      code: data?.error || "",
    });
  }
  return data;
}

export async function getAuthOptions() {
  try {
    const response = await fetch("/api/auth/options", { headers: { Accept: "application/json" } });
    return response.ok ? await response.json() : {};
  } catch {
    return {};
  }
}

/**
 * The view a mailed link asks for (`#reset=<token>` or `#confirm=<token>`), or null. The token
 * leaves the address bar at once, so it stays out of the history and of shared screenshots.
 */
export function linkFromLocation() {
  const match = /^#(reset|confirm)=([A-Za-z0-9_-]+)$/.exec(window.location.hash);
  if (!match) return null;
  window.history.replaceState(null, "", window.location.pathname + window.location.search);
  return { kind: match[1], token: match[2] };
}

function ForgotView({ options, initialEmail }) {
  const [email, setEmail] = useState(initialEmail || "");
  const [sent, setSent] = useState(false);
  const [error, setError] = useState("");
  const [busy, setBusy] = useState(false);
  if (options && options.password_reset === false) {
    return html`<p data-testid="reset-unavailable">${NOT_SET_UP}</p>`;
  }
  if (sent) {
    return html`<p data-testid="reset-sent">If an account exists, we sent a link.</p>`;
  }
  const submit = async (e) => {
    e.preventDefault();
    setBusy(true);
    setError("");
    try {
      await postJSON("/api/auth/password-reset", { email });
      setSent(true);
    } catch (err) {
      setError(err.code === "password_reset_disabled" ? NOT_SET_UP : err.detail);
    } finally {
      setBusy(false);
    }
  };
  return html`
    <form class="recovery-form" onSubmit=${submit}>
      <p class="muted small">Enter your account's address; we mail you a link to choose a new
        password.</p>
      <label class="field">
        <span>Email</span>
        <input type="email" required autocomplete="email" data-testid="reset-email"
          value=${email} onInput=${(e) => setEmail(e.target.value)} />
      </label>
      ${error && html`<p class="auth-error" role="alert" data-testid="recovery-error">${error}</p>`}
      <div class="dialog-actions">
        <button type="submit" class="btn btn-primary" data-testid="reset-request"
          disabled=${busy}>Send the link</button>
      </div>
    </form>`;
}

function ResetView({ token, onSignedIn, onForgot }) {
  const [password, setPassword] = useState("");
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const submit = async (e) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const pair = await postJSON("/api/auth/password-reset/confirm", { token, password });
      await onSignedIn(pair, "Your new password is set; you're signed in.");
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };
  return html`
    <form class="recovery-form" onSubmit=${submit}>
      <label class="field">
        <span>New password</span>
        <input type="password" required minlength="8" autocomplete="new-password"
          data-testid="reset-password" value=${password}
          onInput=${(e) => setPassword(e.target.value)} />
      </label>
      ${error && html`<p class="auth-error" role="alert" data-testid="recovery-error">
        ${error.detail}</p>`}
      <div class="dialog-actions">
        ${error?.code === "invalid_token" && html`
          <button type="button" class="btn btn-ghost" data-testid="reset-again"
            onClick=${onForgot}>Send a new link</button>`}
        <button type="submit" class="btn btn-primary" data-testid="reset-submit"
          disabled=${busy}>Set the password</button>
      </div>
    </form>`;
}

function ConfirmView({ token, onSignedIn, onSignIn }) {
  const [error, setError] = useState("");
  const started = useRef(false);
  useEffect(() => {
    if (started.current) return;
    started.current = true;
    postJSON("/api/auth/confirm-email", { token })
      .then((pair) => onSignedIn(pair, "Address confirmed — you're signed in."))
      .catch((err) => setError(err.detail));
  }, [token, onSignedIn]);
  if (!error) return html`<p class="muted" data-testid="confirm-pending">Confirming…</p>`;
  return html`
    <p class="auth-error" role="alert" data-testid="recovery-error">${error}</p>
    <div class="dialog-actions">
      <button type="button" class="btn btn-primary" data-testid="confirm-sign-in"
        onClick=${onSignIn}>Sign in now</button>
    </div>`;
}

function CheckMailView({ email }) {
  const [note, setNote] = useState("");
  const resend = async () => {
    try {
      const answer = await postJSON("/api/auth/confirm-email/resend", { email });
      setNote(answer.detail);
    } catch (err) {
      setNote(err.detail);
    }
  };
  return html`
    <p data-testid="confirm-sent">We sent a confirmation link to <strong>${email}</strong>.
      Follow it to start using your account.</p>
    ${note && html`<p class="muted small" data-testid="confirm-note">${note}</p>`}
    <div class="dialog-actions">
      <button type="button" class="btn btn-ghost" data-testid="confirm-resend"
        onClick=${resend}>Send the link again</button>
    </div>`;
}

const TITLES = {
  forgot: "Reset your password",
  reset: "Choose a new password",
  confirm: "Confirm your address",
  "check-mail": "Check your mail",
  done: "Welcome back",
};

/**
 * One dialog for every mailed-link step. `view` is null (closed) or {kind, token?, email?,
 * message?}; `onSignedIn(pair)` stores the tokens a link signed in with.
 */
export function RecoveryDialog({ view, options, onView, onClose, onSignedIn, onSignIn }) {
  const dialog = useRef(null);
  useEffect(() => {
    const el = dialog.current;
    if (!el) return;
    if (view && !el.open) el.showModal();
    if (!view && el.open) closeDialog(el);
  }, [view]);
  const signedIn = async (pair, message) => {
    await onSignedIn(pair);
    onView({ kind: "done", message });
  };
  let body = null;
  if (view?.kind === "forgot") {
    body = html`<${ForgotView} options=${options} initialEmail=${view.email} />`;
  } else if (view?.kind === "reset") {
    body = html`<${ResetView} token=${view.token} onSignedIn=${signedIn}
      onForgot=${() => onView({ kind: "forgot" })} />`;
  } else if (view?.kind === "confirm") {
    body = html`<${ConfirmView} token=${view.token} onSignedIn=${signedIn}
      onSignIn=${onSignIn} />`;
  } else if (view?.kind === "check-mail") {
    body = html`<${CheckMailView} email=${view.email} />`;
  } else if (view?.kind === "done") {
    body = html`
      <p data-testid="recovery-done">${view.message}</p>
      <div class="dialog-actions">
        <button type="button" class="btn btn-primary" data-testid="recovery-close"
          onClick=${onClose}>Continue</button>
      </div>`;
  }
  return html`
    <dialog ref=${dialog} class="dialog" data-testid="recovery-dialog"
      aria-labelledby="recovery-title" onClose=${onDialogClosed(onClose)}>
      <div class="dialog-body">
        <div class="dialog-head">
          <h2 id="recovery-title">${view ? TITLES[view.kind] : ""}</h2>
          <button type="button" class="btn btn-icon" aria-label="Close"
            onClick=${onClose}><${Close} /></button>
        </div>
        ${body}
      </div>
    </dialog>`;
}
