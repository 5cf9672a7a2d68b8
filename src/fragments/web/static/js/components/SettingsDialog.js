// Provider access and sampling parameters, saved as they are typed.
import { html, useEffect, useRef, closeDialog, onDialogClosed } from "../lib/html.js";
import { SAMPLING_FIELDS } from "../lib/prefs.js";
import { Close } from "./icons.js";

export function SettingsDialog({ open, prefs, onPrefs, onClose, model }) {
  const dialog = useRef(null);
  useEffect(() => {
    const el = dialog.current;
    if (!el) return;
    if (open && !el.open) el.showModal();
    if (!open && el.open) closeDialog(el);
  }, [open]);

  const setConfig = (key, value) => onPrefs({ config: { ...prefs.config, [key]: value } });
  const reset = () => onPrefs({ config: { api_key: "", base_url: "" }, customModel: "" });
  const provider = model ? model.provider : "the selected provider";

  return html`
    <dialog ref=${dialog} class="dialog" data-testid="settings-dialog"
      aria-labelledby="settings-title" onClose=${onDialogClosed(onClose)}
      onClick=${(e) => { if (e.target === dialog.current) onClose(); }}>
      <form method="dialog" class="dialog-body" onSubmit=${onClose}>
        <div class="dialog-head">
          <h2 id="settings-title">Settings</h2>
          <button type="button" class="btn btn-icon" aria-label="Close settings"
            onClick=${onClose}><${Close} /></button>
        </div>
        <p class="muted small">Kept in this browser only. Leave a field empty to use the
          server's default.</p>

        <fieldset>
          <legend>Provider</legend>
          <label class="field">
            <span>API key</span>
            <input type="password" autocomplete="off" spellcheck="false"
              data-testid="setting-api_key" placeholder=${`Your ${provider} key (optional)`}
              value=${prefs.config.api_key || ""}
              onInput=${(e) => setConfig("api_key", e.target.value)} />
          </label>
          <label class="field">
            <span>Base URL</span>
            <input type="url" spellcheck="false" data-testid="setting-base_url"
              placeholder="e.g. http://localhost:11434/v1"
              value=${prefs.config.base_url || ""}
              onInput=${(e) => setConfig("base_url", e.target.value)} />
            <small class="muted">An OpenAI-compatible server (Ollama, LM Studio, vLLM) or a
              provider's proxy. Your key, not the server's, is sent there.</small>
          </label>
          <label class="field">
            <span>Custom model id</span>
            <input type="text" spellcheck="false" data-testid="setting-custom_model"
              placeholder="e.g. qwen2.5-coder:7b" value=${prefs.customModel || ""}
              onInput=${(e) => onPrefs({ customModel: e.target.value })} />
            <small class="muted">Replaces the picked model's id; its provider stays.</small>
          </label>
        </fieldset>

        <fieldset>
          <legend>Sampling</legend>
          <div class="grid-2">
            ${SAMPLING_FIELDS.map((f) => html`
              <label class="field">
                <span>${f.label}</span>
                <input type="number" inputmode=${f.integer ? "numeric" : "decimal"}
                  data-testid=${`setting-${f.key}`} min=${f.min} max=${f.max} step=${f.step}
                  placeholder="default" value=${prefs.config[f.key] ?? ""}
                  onInput=${(e) => setConfig(f.key, e.target.value)} />
                <small class="muted">${f.hint}</small>
              </label>`)}
          </div>
        </fieldset>

        <div class="dialog-actions">
          <button type="button" class="btn btn-ghost" onClick=${reset}>Reset</button>
          <button type="submit" class="btn btn-primary" data-testid="settings-done">Done</button>
        </div>
      </form>
    </dialog>`;
}
