// The right-hand panel: Code and Preview tabs for the selected fragment.
import { html, useEffect, useState } from "../lib/html.js";
import { CodeActions, CodeView, editedFragment, fragmentFiles } from "./CodeView.js";
import { copyText } from "../lib/clipboard.js";
import { loadDrafts, saveDrafts } from "../lib/drafts.js";
import { Check, Close, Code, Copy, External, Pencil, Play, Refresh } from "./icons.js";
import { Preview } from "./Preview.js";

const TABS = [
  { id: "code", label: "Code" },
  { id: "preview", label: "Preview" },
];

function UrlBar({ url }) {
  const [copied, setCopied] = useState(false);
  useEffect(() => setCopied(false), [url]);
  return html`
    <div class="url-bar" data-testid="preview-url">
      <span class="url-text" title=${url}>${url}</span>
      <button type="button" class="btn btn-icon" data-testid="copy-url"
        aria-label=${copied ? "Address copied" : "Copy the preview address"}
        title=${copied ? "Copied" : "Copy address"}
        onClick=${async () => setCopied(await copyText(url))}>
        ${copied ? html`<${Check} size=${14} />` : html`<${Copy} size=${14} />`}
      </button>
    </div>`;
}

function Tabs({ tab, onTab, running }) {
  const onKeyDown = (e) => {
    if (e.key !== "ArrowLeft" && e.key !== "ArrowRight") return;
    e.preventDefault();
    const next = TABS[(TABS.findIndex((t) => t.id === tab) + 1) % TABS.length].id;
    onTab(next);
    document.getElementById(`tab-${next}`)?.focus();
  };
  return html`
    <div class="tabs" role="tablist" aria-label="Fragment view" onKeyDown=${onKeyDown}>
      ${TABS.map((t) => html`
        <button type="button" role="tab" id=${`tab-${t.id}`} data-testid=${`tab-${t.id}`}
          class=${`tab${tab === t.id ? " active" : ""}`} aria-selected=${tab === t.id ? "true" : "false"}
          aria-controls="panel-body" tabindex=${tab === t.id ? "0" : "-1"}
          onClick=${() => onTab(t.id)}>
          ${t.label}${t.id === "preview" && running && html`<span class="dot-busy"
            aria-label="running" />`}
        </button>`)}
    </div>`;
}

const PANE = { flex: "1", minHeight: "0", display: "flex", flexDirection: "column" };
// The preview under the code tab: its page keeps loading (laid out, not display:none) unseen.
const BEHIND = { position: "absolute", inset: "0", opacity: "0", pointerEvents: "none" };

/** The bar above the editor: what is being edited, Run (save as a version and run), Cancel. */
function EditBar({ changed, saving, onRun, onCancel }) {
  return html`
    <div class="edit-bar" data-testid="edit-bar">
      <${Pencil} size=${14} />
      <span>${changed ? "Edited: run it to save a new version." : "Editing: change the code, then run it."}</span>
      <span class="spacer" />
      <button type="button" class="btn btn-small" data-testid="cancel-edit" disabled=${saving}
        onClick=${onCancel}>Cancel</button>
      <button type="button" class="btn btn-small btn-primary" data-testid="run-edit"
        disabled=${!changed || saving} onClick=${onRun}
        title="Save the edited code as a new version and run it (Ctrl+Enter)">
        ${saving ? html`<span class="spinner" />` : html`<${Play} size=${14} />`} Run
      </button>
    </div>`;
}

export function Panel({ message, tab, onTab, onClose, onRerun, onSaveEdit }) {
  const fragment = message?.object;
  const files = fragmentFiles(fragment);
  const [active, setActive] = useState(0);
  const [reloadKey, setReloadKey] = useState(0);
  // Edit mode: `drafts` maps a file path to its edited text (null when not editing). Kept per
  // message, so looking at another fragment and coming back loses no unsaved edit, and in the
  // tab's storage by version, so a reload or a closed panel loses none either.
  const [draftsByMessage, setDraftsByMessage] = useState({});
  const drafts = message?.id in draftsByMessage
    ? draftsByMessage[message.id]
    : loadDrafts(message?.fragmentId);
  const setDrafts = (next) => {
    const id = message?.id;
    const fragmentId = message?.fragmentId;
    setDraftsByMessage((all) => {
      const current = id in all ? all[id] : loadDrafts(fragmentId);
      const value = typeof next === "function" ? next(current ?? null) : next;
      saveDrafts(fragmentId, value);
      return { ...all, [id]: value };
    });
  };
  const [saving, setSaving] = useState(false);
  useEffect(() => setActive(0), [message?.id]);
  const file = files[Math.min(active, files.length - 1)];
  const streaming = Boolean(message?.streaming && !message?.final);
  const sandbox = message?.sandbox;
  const url = sandbox?.result?.url;
  const running = sandbox?.status === "running";
  // A page prepared while the model writes loads even while the code tab is shown.
  const keepPreview = Boolean(message?.prepared?.url) && (!sandbox || running);
  const canEdit = Boolean(onSaveEdit && message?.final && !streaming && files.length > 0);
  const changed = Boolean(drafts) && files.some((f) => drafts[f.path] !== undefined
    && drafts[f.path] !== f.code);
  const runEdit = async () => {
    setSaving(true);
    try {
      // On failure the drafts stay, so nothing typed is lost; the App shows why.
      if (await onSaveEdit(message, editedFragment(fragment, drafts))) setDrafts(null);
    } finally {
      setSaving(false);
    }
  };

  return html`
    <section class="panel" aria-label="Fragment" data-testid="panel">
      <div class="panel-head">
        <${Tabs} tab=${tab} onTab=${onTab} running=${running} />
        <div class="panel-title" title=${fragment?.title || ""}>
          ${tab === "code" && file
            ? html`<span class="file-name" data-testid="file-name"><${Code} size=${14} />${file.path}</span>`
            : html`<span class="fragment-name">${fragment?.title || ""}</span>`}
        </div>
        <div class="panel-actions">
          ${tab === "code" && canEdit && !drafts && html`
            <button type="button" class="btn btn-icon" data-testid="edit-code"
              aria-label="Edit the code" title="Edit the code"
              onClick=${() => setDrafts({})}><${Pencil} /></button>`}
          ${tab === "code" && html`<${CodeActions} file=${file && drafts?.[file.path] !== undefined
            ? { ...file, code: drafts[file.path] } : file} />`}
          ${tab === "preview" && url && html`
            <a class="btn btn-icon" href=${url} target="_blank" rel="noopener noreferrer"
              aria-label="Open the preview in a new tab" title="Open in a new tab"
              data-testid="open-preview"><${External} /></a>
            <button type="button" class="btn btn-icon" aria-label="Reload the preview"
              title="Reload" data-testid="refresh-button"
              onClick=${() => setReloadKey((k) => k + 1)}><${Refresh} /></button>`}
          ${tab === "preview" && message?.final && html`
            <button type="button" class="btn btn-icon" aria-label="Run again in a fresh sandbox"
              title="Run again" data-testid="rerun-button" disabled=${running}
              onClick=${() => onRerun(message.id)}><${Play} /></button>`}
          <button type="button" class="btn btn-icon" aria-label="Close the panel"
            title="Close" data-testid="close-panel" onClick=${onClose}><${Close} /></button>
        </div>
      </div>
      ${tab === "preview" && url && html`
        <${UrlBar} url=${url} />`}
      ${tab === "code" && drafts && html`<${EditBar} changed=${changed} saving=${saving}
        onRun=${runEdit} onCancel=${() => setDrafts(null)} />`}
      <div class="panel-body" id="panel-body" role="tabpanel" aria-labelledby=${`tab-${tab}`}
        style=${{ position: "relative" }}>
        ${tab === "code" && html`<${CodeView} files=${files} active=${active}
          onActive=${setActive} streaming=${streaming} drafts=${drafts}
          onDraft=${(path, text) => setDrafts((d) => ({ ...d, [path]: text }))}
          onRun=${() => changed && !saving && runEdit()} />`}
        ${(tab === "preview" || keepPreview) && html`<div
          class=${tab === "preview" ? "preview-pane" : "preview-pane behind"}
          style=${tab === "preview" ? PANE : { ...PANE, ...BEHIND }}
          aria-hidden=${tab === "preview" ? undefined : "true"}>
          <${Preview} sandbox=${sandbox} prepared=${message?.prepared} reloadKey=${reloadKey} />
        </div>`}
      </div>
    </section>`;
}
