// User preferences kept in localStorage: model, template, provider settings, theme.

const KEY = "fragments.prefs.v1";

export const SAMPLING_FIELDS = [
  { key: "temperature", label: "Temperature", min: 0, max: 2, step: 0.1,
    hint: "Randomness, 0 to 2." },
  { key: "top_p", label: "Top P", min: 0, max: 1, step: 0.05, hint: "Nucleus sampling, 0 to 1." },
  { key: "top_k", label: "Top K", min: 0, step: 1, integer: true,
    hint: "Sample from the K likeliest tokens." },
  { key: "max_tokens", label: "Max tokens", min: 1, max: 200000, step: 1, integer: true,
    hint: "Longest answer allowed." },
  { key: "frequency_penalty", label: "Frequency penalty", min: -2, max: 2, step: 0.1,
    hint: "Discourages repeated tokens." },
  { key: "presence_penalty", label: "Presence penalty", min: -2, max: 2, step: 0.1,
    hint: "Encourages new topics." },
];

export const DEFAULT_PREFS = {
  model: "", // "<providerId>:<model id>"
  template: "auto",
  customModel: "",
  config: { api_key: "", base_url: "" },
  theme: "", // "" follows the system
};

export function loadPrefs() {
  try {
    const stored = JSON.parse(localStorage.getItem(KEY) || "{}");
    return {
      ...DEFAULT_PREFS,
      ...stored,
      config: { ...DEFAULT_PREFS.config, ...(stored.config || {}) },
    };
  } catch {
    return { ...DEFAULT_PREFS, config: { ...DEFAULT_PREFS.config } };
  }
}

export function savePrefs(prefs) {
  try {
    localStorage.setItem(KEY, JSON.stringify(prefs));
  } catch {
    // Private mode or a full quota: preferences just don't persist.
  }
}

/** The request's `config`: empty values omitted, numbers as numbers. */
export function requestConfig(config) {
  const out = {};
  for (const key of ["api_key", "base_url"]) {
    const value = (config[key] || "").trim();
    if (value) out[key] = value;
  }
  for (const field of SAMPLING_FIELDS) {
    const raw = config[field.key];
    if (raw === undefined || raw === null || raw === "") continue;
    const value = Number(raw);
    if (!Number.isFinite(value)) continue;
    out[field.key] = field.integer ? Math.round(value) : value;
  }
  return out;
}
