// Small stroke icons (24x24 grid, currentColor), drawn for this app.
import { html } from "../lib/html.js";

const icon = (body) => ({ size = 16, label } = {}) => html`
  <svg width=${size} height=${size} viewBox="0 0 24 24" fill="none" stroke="currentColor"
    stroke-width="2" stroke-linecap="round" stroke-linejoin="round"
    aria-hidden=${label ? undefined : "true"} role=${label ? "img" : undefined}
    aria-label=${label}>${body}</svg>`;

export const ArrowUp = icon(html`<path d="M12 19V5" /><path d="M5 12l7-7 7 7" />`);
export const Stop = icon(html`<rect x="6" y="6" width="12" height="12" rx="2" fill="currentColor" />`);
export const Paperclip = icon(
  html`<path d="M21 11.5l-8.6 8.6a5 5 0 0 1-7.1-7.1l8.6-8.6a3.3 3.3 0 0 1 4.7 4.7l-8.6 8.6a1.7 1.7 0 0 1-2.4-2.4l7.9-7.9" />`,
);
export const Sliders = icon(html`
  <path d="M4 6h10" /><path d="M18 6h2" /><circle cx="16" cy="6" r="2" />
  <path d="M4 12h2" /><path d="M10 12h10" /><circle cx="8" cy="12" r="2" />
  <path d="M4 18h12" /><path d="M20 18h0" /><circle cx="18" cy="18" r="2" />`);
export const Sun = icon(html`
  <circle cx="12" cy="12" r="4" />
  <path d="M12 2v2M12 20v2M4.9 4.9l1.4 1.4M17.7 17.7l1.4 1.4M2 12h2M20 12h2M4.9 19.1l1.4-1.4M17.7 6.3l1.4-1.4" />`);
export const Moon = icon(html`<path d="M20 14.5A8 8 0 0 1 9.5 4 8 8 0 1 0 20 14.5z" />`);
export const Plus = icon(html`<path d="M12 5v14M5 12h14" />`);
export const Copy = icon(html`
  <rect x="9" y="9" width="12" height="12" rx="2" />
  <path d="M5 15H4a1 1 0 0 1-1-1V4a1 1 0 0 1 1-1h10a1 1 0 0 1 1 1v1" />`);
export const Check = icon(html`<path d="M5 12.5l4.5 4.5L19 7" />`);
export const Download = icon(html`<path d="M12 4v11" /><path d="M7 10l5 5 5-5" /><path d="M5 20h14" />`);
export const Refresh = icon(html`
  <path d="M20 11a8 8 0 0 0-14.6-4.5L4 8" /><path d="M4 4v4h4" />
  <path d="M4 13a8 8 0 0 0 14.6 4.5L20 16" /><path d="M20 20v-4h-4" />`);
export const Code = icon(html`<path d="M9 8l-4 4 4 4" /><path d="M15 8l4 4-4 4" />`);
export const Play = icon(html`<path d="M7 5l12 7-12 7z" />`);
export const Close = icon(html`<path d="M6 6l12 12M18 6L6 18" />`);
export const External = icon(html`
  <path d="M14 4h6v6" /><path d="M20 4l-9 9" /><path d="M18 14v5a1 1 0 0 1-1 1H5a1 1 0 0 1-1-1V7a1 1 0 0 1 1-1h5" />`);
export const Alert = icon(html`
  <path d="M12 3l10 18H2z" /><path d="M12 10v4" /><path d="M12 17.5v.01" />`);
export const Terminal = icon(html`<path d="M5 7l5 5-5 5" /><path d="M13 17h6" />`);
export const File = icon(html`
  <path d="M14 3H7a2 2 0 0 0-2 2v14a2 2 0 0 0 2 2h10a2 2 0 0 0 2-2V8z" /><path d="M14 3v5h5" />`);
export const Sparkle = icon(html`
  <path d="M12 3l1.8 5.2L19 10l-5.2 1.8L12 17l-1.8-5.2L5 10l5.2-1.8z" />
  <path d="M19 16l.7 2 2 .7-2 .7-.7 2-.7-2-2-.7 2-.7z" />`);
export const Pencil = icon(html`
  <path d="M4 20h4L19 9a2.1 2.1 0 0 0-4-4L4 16v4z" /><path d="M13.5 6.5l4 4" />`);
