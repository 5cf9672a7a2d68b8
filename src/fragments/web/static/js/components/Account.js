// Accounts in the top bar: the guest or the signed-in user, sign in / sign up / sign out, and
// the team the tokens act for.
import { html, useEffect, useRef, useState, closeDialog, onDialogClosed } from "../lib/html.js";
import { Close } from "./icons.js";
import { SsoButton } from "./Sso.js";

export function AccountBar({ me, ready, onOpenAuth, onSignOut, onSwitchTeam }) {
  if (!me) {
    // Nobody is signed in and no guest session exists (guests are off on this server, or it
    // could not be reached): the way in is still offered once the page knows the session.
    if (!ready) return null;
    return html`
      <div class="account" data-testid="account">
        <button type="button" class="btn btn-ghost" data-testid="sign-in"
          onClick=${() => onOpenAuth("login")}>Sign in</button>
        <button type="button" class="btn" data-testid="sign-up"
          onClick=${() => onOpenAuth("signup")}>Sign up</button>
      </div>`;
  }
  if (me.guest) {
    return html`
      <div class="account" data-testid="account">
        <span class="muted small" data-testid="account-guest">Guest</span>
        <button type="button" class="btn btn-ghost" data-testid="sign-in"
          onClick=${() => onOpenAuth("login")}>Sign in</button>
        <button type="button" class="btn" data-testid="sign-up"
          onClick=${() => onOpenAuth("signup")}>Sign up</button>
      </div>`;
  }
  return html`
    <div class="account" data-testid="account">
      ${me.teams.length > 1 && html`
        <label class="picker">
          <span class="picker-label">Team</span>
          <select data-testid="team-select" value=${me.team_id}
            onChange=${(e) => onSwitchTeam(e.target.value)}>
            ${me.teams.map((t) => html`<option value=${t.id}>${t.name} (${t.role})</option>`)}
          </select>
        </label>`}
      <span class="small account-email" data-testid="account-email" title=${me.email}>
        ${me.email}</span>
      <button type="button" class="btn btn-ghost" data-testid="sign-out"
        onClick=${onSignOut}>Sign out</button>
    </div>`;
}

export function AuthDialog({ mode, onMode, onClose, onSubmit, onForgot }) {
  const dialog = useRef(null);
  const [email, setEmail] = useState("");
  const [password, setPassword] = useState("");
  const [error, setError] = useState("");
  const [busy, setBusy] = useState(false);
  useEffect(() => {
    const el = dialog.current;
    if (!el) return;
    if (mode && !el.open) el.showModal();
    if (!mode && el.open) closeDialog(el);
    // The password goes when the dialog closes, not when a submit's promise settles: that can
    // settle after the dialog was opened again and typed into (a sign-up that ends a guest
    // session still reloads the account after showing "check your mail").
    if (!mode) setPassword("");
    setError("");
  }, [mode]);

  const submit = async (e) => {
    e.preventDefault();
    setBusy(true);
    setError("");
    try {
      await onSubmit(mode, email, password);
    } catch (err) {
      setError(err.detail || err.message || "That did not work.");
    } finally {
      setBusy(false);
    }
  };
  const signup = mode === "signup";
  return html`
    <dialog ref=${dialog} class="dialog" data-testid="auth-dialog" aria-labelledby="auth-title"
      onClose=${onDialogClosed(onClose)}>
      <form class="dialog-body" onSubmit=${submit}>
        <div class="dialog-head">
          <h2 id="auth-title">${signup ? "Create an account" : "Sign in"}</h2>
          <button type="button" class="btn btn-icon" aria-label="Close"
            onClick=${onClose}><${Close} /></button>
        </div>
        ${signup && html`<p class="muted small">Your guest conversations come with you.</p>`}
        <${SsoButton} />
        <label class="field">
          <span>Email</span>
          <input type="email" required autocomplete="email" data-testid="auth-email"
            value=${email} onInput=${(e) => setEmail(e.target.value)} />
        </label>
        <label class="field">
          <span>Password</span>
          <input type="password" required minlength=${signup ? 8 : 1}
            autocomplete=${signup ? "new-password" : "current-password"}
            data-testid="auth-password" value=${password}
            onInput=${(e) => setPassword(e.target.value)} />
        </label>
        ${!signup && onForgot && html`
          <button type="button" class="auth-link" data-testid="forgot-password"
            onClick=${() => onForgot(email)}>Forgot password?</button>`}
        ${error && html`<p class="auth-error" role="alert" data-testid="auth-error">${error}</p>`}
        <div class="dialog-actions">
          <button type="button" class="btn btn-ghost" data-testid="auth-switch"
            onClick=${() => onMode(signup ? "login" : "signup")}>
            ${signup ? "I have an account" : "Create an account"}</button>
          <button type="submit" class="btn btn-primary" data-testid="auth-submit"
            disabled=${busy}>${signup ? "Sign up" : "Sign in"}</button>
        </div>
      </form>
    </dialog>`;
}
