// Tokens kept in localStorage: a guest token survives a refresh (and so do the guest's
// conversations); an expired access token is refreshed once, transparently.
const KEY = "fragments.session";
const CURRENT = "fragments.conversation";
const PENDING = "fragments.pendingTurns";

function read(key, fallback) {
  try {
    const value = JSON.parse(localStorage.getItem(key) || "null");
    return value ?? fallback;
  } catch {
    return fallback;
  }
}

function write(key, value) {
  try {
    if (value === null || value === undefined) localStorage.removeItem(key);
    else localStorage.setItem(key, JSON.stringify(value));
  } catch {
    // Private mode or a full quota: the page still works, it just forgets on refresh.
  }
}

/** {access_token, refresh_token, guest} or null. */
export const loadTokens = () => read(KEY, null);
export const saveTokens = (tokens) => write(KEY, tokens);

export const loadCurrentConversation = () => read(CURRENT, null);
export const saveCurrentConversation = (id) => write(CURRENT, id);

/** Turns the server could not save (database down), re-sent later: [{conversation_id, turn}]. */
export const loadPendingTurns = () => read(PENDING, []);
export const savePendingTurns = (list) => write(PENDING, list.length ? list : null);
