// The workspace bar above the chat input: data files uploaded into the conversation, the
// versions menu (restore), undo, the ZIP download and publishing a web app with an expiry.
import { html, useEffect, useRef, useState } from "../lib/html.js";
import { copyText } from "../lib/clipboard.js";
import { Check, Copy, Download, File, Paperclip } from "./icons.js";

const DATA_TYPES = ".csv,.tsv,.json,.jsonl,.txt,.md,.xlsx,.xls,.parquet";
// The original app's choices, in the duration strings POST /api/publish takes.
export const EXPIRIES = [
  { value: "30m", label: "30 minutes" },
  { value: "1h", label: "1 hour" },
  { value: "3h", label: "3 hours" },
  { value: "6h", label: "6 hours" },
  { value: "1d", label: "1 day" },
];

const sizeOf = (n) => (n < 1024 ? `${n} B` : n < 1048576 ? `${(n / 1024).toFixed(1)} KB`
  : `${(n / 1048576).toFixed(1)} MB`);

/** The data files of the conversation, an "Add data" button and a remove button on each. */
export function DataFiles({ files, busy, onUpload, onRemove, disabled }) {
  const input = useRef(null);
  return html`
    <div class="data-files" data-testid="data-files">
      <input ref=${input} type="file" accept=${DATA_TYPES} multiple hidden
        data-testid="data-file-input"
        onChange=${(e) => { onUpload([...e.target.files]); e.target.value = ""; }} />
      <button type="button" class="btn btn-ghost btn-small" data-testid="add-data"
        disabled=${disabled || busy} title="Upload CSV, TSV, JSON, text, Excel or Parquet files"
        onClick=${() => input.current.click()}>
        <${Paperclip} size=${14} /> ${busy ? "Uploading…" : "Add data"}
      </button>
      ${files.map((f) => html`
        <span class="data-chip" data-testid="data-file" data-name=${f.name}
          title=${f.preview}>
          <${File} size=${12} /> ${f.name} <span class="muted">${sizeOf(f.size)}</span>
          <button type="button" class="chip-remove" aria-label=${`Remove ${f.name}`}
            data-testid="remove-data" onClick=${() => onRemove(f.name)}>×</button>
        </span>`)}
    </div>`;
}

/** Versions menu: every version, the current one marked, others restorable. */
function VersionsMenu({ load, onRestore, disabled }) {
  const [open, setOpen] = useState(false);
  const [items, setItems] = useState(null);
  const [error, setError] = useState(null);
  useEffect(() => {
    if (!open) return;
    setItems(null);
    setError(null);
    load().then((v) => setItems(v.items)).catch((e) => setError(e.detail || "Not loaded."));
  }, [open, load]);
  return html`
    <div class="menu-wrap">
      <button type="button" class="btn btn-ghost btn-small" data-testid="versions-button"
        aria-expanded=${open ? "true" : "false"} disabled=${disabled}
        onClick=${() => setOpen(!open)}>Versions</button>
      ${open && html`
        <div class="menu" role="menu" data-testid="versions-menu">
          ${error && html`<p class="small muted">${error}</p>`}
          ${items === null && !error && html`<p class="small muted">Loading…</p>`}
          ${items && items.length === 0 && html`<p class="small muted">No versions yet.</p>`}
          ${items && [...items].reverse().map((v) => html`
            <div class="menu-item" data-testid="version-item" data-version=${v.version}
              data-current=${v.current ? "true" : "false"}>
              <span class="version-label">
                v${v.version} ${v.title}
                ${v.source === "restore" && html`<span class="muted small"> (restored v${v.restored_from})</span>`}
                ${v.source === "user" && html`<span class="muted small" data-testid="edited-by-you">
                  (edited by you${v.edited_from ? ` from v${v.edited_from}` : ""})</span>`}
                ${!v.in_chat && html`<span class="muted small"> (undone)</span>`}
              </span>
              ${v.current
                ? html`<span class="badge">current</span>`
                : html`<button type="button" class="btn btn-small" data-testid="restore-version"
                    onClick=${() => { setOpen(false); onRestore(v.id); }}>Restore</button>`}
            </div>`)}
        </div>`}
    </div>`;
}

/** Publish a running web app for a while; shows the short link with a copy button. */
function PublishControl({ sandboxId, onPublish }) {
  const [duration, setDuration] = useState("1h");
  const [link, setLink] = useState(null);
  const [busy, setBusy] = useState(false);
  const [copied, setCopied] = useState(false);
  useEffect(() => { setLink(null); setCopied(false); }, [sandboxId]);
  const go = async () => {
    setBusy(true);
    try {
      setLink(await onPublish(sandboxId, duration));
    } finally {
      setBusy(false);
    }
  };
  return html`
    <div class="publish" data-testid="publish">
      <select data-testid="publish-duration" value=${duration} aria-label="Keep it online for"
        onChange=${(e) => setDuration(e.target.value)}>
        ${EXPIRIES.map((x) => html`<option value=${x.value}>${x.label}</option>`)}
      </select>
      <button type="button" class="btn btn-small btn-primary" data-testid="publish-button"
        disabled=${busy} onClick=${go}>${busy ? "Publishing…" : "Publish"}</button>
      ${link && html`
        <span class="publish-link">
          <a href=${link.url} target="_blank" rel="noopener noreferrer"
            data-testid="published-url">${link.url}</a>
          <button type="button" class="btn btn-icon" data-testid="copy-published"
            aria-label="Copy the link" onClick=${async () => setCopied(await copyText(link.url))}>
            ${copied ? html`<${Check} size=${14} />` : html`<${Copy} size=${14} />`}
          </button>
        </span>`}
    </div>`;
}

/** The bar: versions, undo, download and publish for the selected fragment. */
export function WorkspaceBar({ stored, canUndo, message, onUndo, loadVersions, onRestore,
  onDownload, onPublish, busy }) {
  const sandboxId = message?.sandbox?.result?.url ? message.sandbox.result.sandbox_id : null;
  return html`
    <div class="workspace-bar" data-testid="workspace-bar">
      <${VersionsMenu} load=${loadVersions} onRestore=${onRestore} disabled=${!stored || busy} />
      <button type="button" class="btn btn-ghost btn-small" data-testid="undo-button"
        disabled=${!canUndo || busy} title="Remove the last message and its answer"
        onClick=${onUndo}>Undo</button>
      <button type="button" class="btn btn-ghost btn-small" data-testid="download-zip"
        disabled=${!message?.object || !message?.final}
        onClick=${() => onDownload(message)}><${Download} size=${14} /> ZIP</button>
      ${sandboxId && stored && html`<${PublishControl} sandboxId=${sandboxId}
        onPublish=${onPublish} />`}
    </div>`;
}
