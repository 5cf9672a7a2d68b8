// Small SVG charts drawn by hand (no chart library): bars over days, a line over days, and
// horizontal bars by name. Each bar or point carries its figure in `data-value` and a <title>.
import { html } from "../lib/html.js";

const W = 560;
const H = 180;
const PAD = { left: 48, right: 8, top: 10, bottom: 22 };

function niceMax(max) {
  if (!(max > 0)) return 1;
  const step = 10 ** Math.floor(Math.log10(max));
  for (const f of [1, 2, 2.5, 5, 10]) if (f * step >= max) return f * step;
  return 10 * step;
}

function frame(top, format, first, last) {
  const y0 = H - PAD.bottom;
  return html`
    <line class="axis" x1=${PAD.left} y1=${y0} x2=${W - PAD.right} y2=${y0} />
    <line class="axis" x1=${PAD.left} y1=${PAD.top} x2=${PAD.left} y2=${y0} />
    <text x=${PAD.left - 4} y=${PAD.top + 8} text-anchor="end">${format(top)}</text>
    <text x=${PAD.left - 4} y=${y0} text-anchor="end">${format(0)}</text>
    <text x=${PAD.left} y=${H - 6}>${first}</text>
    <text x=${W - PAD.right} y=${H - 6} text-anchor="end">${last}</text>`;
}

/** Vertical bars, one per item: items = [{label, value}]. */
export function BarChart({ title, items, format = String, testid }) {
  const top = niceMax(Math.max(0, ...items.map((i) => i.value)));
  const plotW = W - PAD.left - PAD.right;
  const plotH = H - PAD.top - PAD.bottom;
  const slot = plotW / Math.max(1, items.length);
  const width = Math.max(1, slot * 0.75);
  return html`
    <figure class="admin-chart" data-testid=${testid}>
      <h3>${title}</h3>
      <svg viewBox="0 0 ${W} ${H}" role="img" aria-label=${title}>
        ${frame(top, format, items[0]?.label ?? "", items[items.length - 1]?.label ?? "")}
        ${items.map((item, i) => {
          const h = (item.value / top) * plotH;
          return html`<rect class="bar" x=${PAD.left + i * slot + (slot - width) / 2}
            y=${H - PAD.bottom - h} width=${width} height=${Math.max(0, h)}
            data-label=${item.label} data-value=${item.value}>
            <title>${item.label}: ${format(item.value)}</title></rect>`;
        })}
      </svg>
    </figure>`;
}

/** A line through the items that have a value (null values leave a gap in the dots). */
export function LineChart({ title, items, format = String, testid }) {
  const known = items.filter((i) => i.value !== null && i.value !== undefined);
  const top = niceMax(Math.max(0, ...known.map((i) => i.value)));
  const plotW = W - PAD.left - PAD.right;
  const plotH = H - PAD.top - PAD.bottom;
  const step = plotW / Math.max(1, items.length - 1);
  const point = (i, v) => [PAD.left + i * step, H - PAD.bottom - (v / top) * plotH];
  const coords = items
    .map((item, i) => (item.value === null || item.value === undefined ? null : point(i, item.value)))
    .filter(Boolean);
  return html`
    <figure class="admin-chart" data-testid=${testid}>
      <h3>${title}</h3>
      ${known.length === 0
        ? html`<div class="empty">No data in this window.</div>`
        : html`<svg viewBox="0 0 ${W} ${H}" role="img" aria-label=${title}>
            ${frame(top, format, items[0]?.label ?? "", items[items.length - 1]?.label ?? "")}
            <polyline class="line" points=${coords.map((c) => c.join(",")).join(" ")} />
            ${items.map((item, i) => {
              if (item.value === null || item.value === undefined) return null;
              const [x, y] = point(i, item.value);
              return html`<circle class="dot" cx=${x} cy=${y} r="3" data-label=${item.label}
                data-value=${item.value}><title>${item.label}: ${format(item.value)}</title></circle>`;
            })}
          </svg>`}
    </figure>`;
}

/** Horizontal bars by name, largest first: items = [{label, value}]. */
export function RankChart({ title, items, format = String, testid }) {
  const rowH = 22;
  const labelW = 170;
  const top = niceMax(Math.max(0, ...items.map((i) => i.value)));
  const height = Math.max(1, items.length) * rowH + 8;
  return html`
    <figure class="admin-chart" data-testid=${testid}>
      <h3>${title}</h3>
      ${items.length === 0
        ? html`<div class="empty">No data in this window.</div>`
        : html`<svg viewBox="0 0 ${W} ${height}" role="img" aria-label=${title}>
            ${items.map((item, i) => {
              const w = (item.value / top) * (W - labelW - 80);
              const y = 4 + i * rowH;
              return html`<g>
                <text x=${labelW - 6} y=${y + 14} text-anchor="end">${item.label.slice(0, 26)}</text>
                <rect class="bar" x=${labelW} y=${y + 3} width=${Math.max(1, w)} height=${rowH - 8}
                  data-label=${item.label} data-value=${item.value}>
                  <title>${item.label}: ${format(item.value)}</title></rect>
                <text x=${labelW + Math.max(1, w) + 6} y=${y + 14}>${format(item.value)}</text>
              </g>`;
            })}
          </svg>`}
    </figure>`;
}
