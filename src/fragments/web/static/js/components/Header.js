// The top bar: brand, template and model pickers, new chat, settings and theme toggle.
import { html, useMemo } from "../lib/html.js";
import { Moon, Plus, Sliders, Sun } from "./icons.js";

export function modelKey(model) {
  return `${model.providerId}:${model.id}`;
}

function ModelPicker({ models, value, onChange, customModel }) {
  const groups = useMemo(() => {
    const byProvider = new Map();
    for (const model of models) {
      if (!byProvider.has(model.provider)) byProvider.set(model.provider, []);
      byProvider.get(model.provider).push(model);
    }
    return [...byProvider.entries()];
  }, [models]);
  return html`
    <label class="picker">
      <span class="picker-label">Model</span>
      <select data-testid="model-select" value=${value} onChange=${(e) => onChange(e.target.value)}
        title=${customModel ? `Custom model id "${customModel}" on this provider` : undefined}>
        ${models.length === 0 && html`<option value="">Loading…</option>`}
        ${groups.map(([provider, list]) => html`
          <optgroup label=${provider}>
            ${list.map((m) => html`<option value=${modelKey(m)}>${m.name}</option>`)}
          </optgroup>`)}
      </select>
      ${customModel && html`<span class="badge" data-testid="custom-model-badge"
        title="Set in settings">${customModel}</span>`}
    </label>`;
}

function TemplatePicker({ templates, value, onChange }) {
  return html`
    <label class="picker">
      <span class="picker-label">Template</span>
      <select data-testid="template-select" value=${value}
        onChange=${(e) => onChange(e.target.value)}>
        <option value="auto">Auto</option>
        ${Object.values(templates).map((t) => html`<option value=${t.id}>${t.name}</option>`)}
      </select>
    </label>`;
}

export function Header(props) {
  const { models, templates, prefs, theme } = props;
  return html`
    <header class="app-header">
      <a class="brand" href="/" aria-label="Fragments home" onClick=${(e) => {
        e.preventDefault();
        props.onNewChat();
      }}>
        <span class="brand-mark" aria-hidden="true">
          <svg viewBox="0 0 24 24" width="18" height="18"><path fill="currentColor"
            d="M13.5 2 5 13.2h6.1L9.8 22 19 10.2h-6.3z" /></svg>
        </span>
        <span class="brand-name">Fragments</span>
      </a>
      <div class="pickers">
        <${TemplatePicker} templates=${templates} value=${prefs.template}
          onChange=${(template) => props.onPrefs({ template })} />
        <${ModelPicker} models=${models} value=${props.model ? modelKey(props.model) : ""}
          customModel=${prefs.customModel}
          onChange=${(model) => props.onPrefs({ model })} />
      </div>
      <div class="header-actions">
        ${props.onToggleHistory && html`<button type="button" class="btn btn-ghost show-narrow"
          data-testid="history-toggle" aria-expanded=${props.historyOpen ? "true" : "false"}
          aria-controls="history" onClick=${props.onToggleHistory}>History</button>`}
        ${props.account}
        <button type="button" class="btn btn-ghost" data-testid="new-chat" aria-label="New chat"
          onClick=${props.onNewChat}>
          <${Plus} /><span class="hide-sm">New chat</span>
        </button>
        <button type="button" class="btn btn-icon" data-testid="settings-button"
          aria-label="Settings" title="Settings" onClick=${props.onOpenSettings}>
          <${Sliders} />
        </button>
        <button type="button" class="btn btn-icon" data-testid="theme-toggle"
          aria-label=${theme === "dark" ? "Switch to light theme" : "Switch to dark theme"}
          title=${theme === "dark" ? "Light theme" : "Dark theme"} onClick=${props.onToggleTheme}>
          ${theme === "dark" ? html`<${Sun} />` : html`<${Moon} />`}
        </button>
      </div>
    </header>`;
}
