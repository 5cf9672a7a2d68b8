// Unsaved hand edits, kept in the tab's sessionStorage by fragment version so a reload (or
// closing the panel) loses nothing typed. sessionStorage, not localStorage: edits of code stay
// with the tab that made them and go when it closes, not with whoever uses the browser next.

const KEY = "fragments.drafts.v1";
const MAX_VERSIONS = 20; // the oldest drafts go first when more versions have one

function readAll() {
  try {
    const all = JSON.parse(sessionStorage.getItem(KEY) || "{}");
    return all && typeof all === "object" ? all : {};
  } catch {
    return {};
  }
}

/** The drafts ({path: text}) saved for a fragment version, or null. */
export function loadDrafts(fragmentId) {
  if (!fragmentId) return null;
  const entry = readAll()[fragmentId];
  return entry && typeof entry.files === "object" ? entry.files : null;
}

/** Keep `drafts` for a fragment version; null forgets them. */
export function saveDrafts(fragmentId, drafts) {
  if (!fragmentId) return;
  const all = readAll();
  if (drafts && Object.keys(drafts).length > 0) {
    all[fragmentId] = { files: drafts, at: Date.now() };
  } else {
    delete all[fragmentId];
  }
  const ids = Object.keys(all).sort((a, b) => all[b].at - all[a].at);
  for (const id of ids.slice(MAX_VERSIONS)) delete all[id];
  try {
    sessionStorage.setItem(KEY, JSON.stringify(all));
  } catch {
    // A full quota (a huge paste): the edit stays in the page, it just won't survive a reload.
  }
}
