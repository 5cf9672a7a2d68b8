// Single sign-on: the "Sign in with <provider>" button (when the server offers one) and the
// return from the provider. The server sends the page to `/#sso=<one-time code>` (exchanged here
// for tokens) or `/#sso_error=<code>` (told to the person in one sentence); a URL fragment never
// reaches a server, so the tokens stay out of every log.
import { html, useEffect, useState } from "../lib/html.js";
import { saveTokens } from "../lib/session.js";

const SSO_ERRORS = {
  cancelled: "Sign-in was cancelled at the provider.",
  provider_error: "The sign-in provider reported a problem; try again or ask your administrator.",
  state_mismatch:
    "That sign-in could not be verified (it was started elsewhere or took too long); sign in again.",
  provider_unavailable: "The sign-in provider could not be reached; try again shortly.",
  invalid_token: "The sign-in provider's answer could not be verified; sign in again.",
  email_taken:
    "An account with this email already exists: sign in with its password (accounts are never merged automatically).",
  server_unavailable: "The server could not finish signing you in; try again shortly.",
};

let options = null;

/** What /api/auth/options offers for single sign-on ({name, login_url}), or null. */
function ssoOption() {
  options ??= fetch("/api/auth/options", { headers: { Accept: "application/json" } })
    .then((r) => (r.ok ? r.json() : {}))
    .then((body) => body.sso || null)
    .catch(() => null);
  return options;
}

export function SsoButton() {
  const [sso, setSso] = useState(null);
  useEffect(() => {
    ssoOption().then(setSso);
  }, []);
  if (!sso) return null;
  // A plain link: the provider's page needs a top-level navigation, not a fetch.
  return html`
    <div class="sso">
      <a class="btn" href=${sso.login_url} data-testid="sso-sign-in">Sign in with ${sso.name}</a>
      <p class="muted small">or with an email and a password:</p>
    </div>`;
}

/**
 * Finish a return from the provider, if this page load is one: keep the tokens, or call
 * onError with a sentence. Resolves once done, so the session is loaded after it.
 */
export async function finishSso(onError) {
  const params = new URLSearchParams(window.location.hash.slice(1));
  const code = params.get("sso");
  const failure = params.get("sso_error");
  if (!code && !failure) return;
  // The code works once: drop it from the address bar (and from history) straight away.
  history.replaceState(null, "", window.location.pathname + window.location.search);
  if (failure) {
    onError(SSO_ERRORS[failure] || "Single sign-on did not work; sign in again.");
    return;
  }
  try {
    const response = await fetch("/api/auth/oidc/exchange", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify({ code }),
    });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      onError(body.detail || "Single sign-on did not work; sign in again.");
      return;
    }
    saveTokens({ ...body, guest: false });
  } catch {
    onError("Could not reach the server to finish signing in; sign in again.");
  }
}
