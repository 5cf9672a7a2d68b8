// The history sidebar: the caller's conversations and their team's shared ones, newest first.
import { html } from "../lib/html.js";

export function History({ items, currentId, onOpen, onShare, onDelete, open, drawer, onClose }) {
  if (!open) return null;
  return html`
    <aside id="history" class=${`history${drawer ? " open" : ""}`} aria-label="History" data-testid="history">
      ${drawer && html`<button type="button" class="btn btn-icon history-close"
        data-testid="history-close" aria-label="Close the history" onClick=${onClose}>×</button>`}
      <h2 class="history-title small muted">History</h2>
      ${items.length === 0 && html`<p class="muted small" data-testid="history-empty">
        Your conversations will appear here.</p>`}
      <ul class="history-list">
        ${items.map((c) => html`
          <li class=${`history-item${c.id === currentId ? " current" : ""}`}
            data-testid="history-item" data-id=${c.id}>
            <button type="button" class="history-open" title=${c.title || "Untitled"}
              onClick=${() => onOpen(c.id)}>${c.title || "Untitled"}</button>
            ${c.owned !== false && html`
              <label class="history-share small" title="Shared with your team">
                <input type="checkbox" data-testid="share-toggle" checked=${c.shared}
                  onChange=${(e) => onShare(c.id, e.target.checked)} /> shared
              </label>
              <button type="button" class="btn btn-icon history-delete" aria-label="Delete"
                data-testid="history-delete" onClick=${() => onDelete(c.id)}>×</button>`}
          </li>`)}
      </ul>
    </aside>`;
}
