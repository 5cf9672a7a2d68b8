// What the sandbox made: an interpreter cell's outputs, or a web app in an iframe.
import { html, ThemeContext, useContext, useEffect, useRef, useState } from "../lib/html.js";
import { renderMarkdown } from "../lib/markdown.js";
import { isPlotlyFigure, loadPlotly } from "../lib/plotly.js";
import { Alert } from "./icons.js";

const PHASES = {
  queued: "Waiting for a sandbox",
  acquiring: "Getting a sandbox",
  installing: "Installing dependencies",
  starting: "Starting the app",
  running: "Running the code",
};

// Jupyter tracebacks carry ANSI colour codes.
const stripAnsi = (text) => (text || "").replace(/\u001b\[[0-9;]*[A-Za-z]/g, "");

function svgSource(svg) {
  const text = svg.trim();
  // Images come base64-encoded; an SVG may also arrive as markup. Either way it is shown
  // through <img>, where its scripts cannot run, never inlined into the page.
  return text.startsWith("<")
    ? `data:image/svg+xml;charset=utf-8,${encodeURIComponent(text)}`
    : `data:image/svg+xml;base64,${text}`;
}

// Notebook HTML (pandas tables mostly) arrives unstyled; give it the page's quiet look, in the
// page's theme (the frame re-renders when the theme changes).
function frameStyle(dark) {
  const c = dark
    ? { text: "#e4e4e7", bg: "#0b0b0d", line: "#27272a", head: "#1a1a1e", zebra: "#111114" }
    : { text: "#18181b", bg: "#ffffff", line: "#e4e4e7", head: "#f4f4f5", zebra: "#fafafa" };
  return `<style>
  body { margin: 4px; font: 13px/1.5 system-ui, sans-serif; color: ${c.text}; background: ${c.bg}; }
  table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
  th, td { border: 1px solid ${c.line}; padding: 4px 10px; text-align: right; }
  thead th { background: ${c.head}; }
  tbody tr:nth-child(even) { background: ${c.zebra}; }
  a { color: #ff8800; }
</style>`;
}

function HtmlResult({ markup }) {
  const frame = useRef(null);
  const dark = useContext(ThemeContext) === "dark";
  // No scripts run in the frame (sandbox without allow-scripts); same-origin only lets the page
  // measure the content to size the frame.
  useEffect(() => {
    const el = frame.current;
    if (!el) return undefined;
    const fit = () => {
      // The body's own height: the root element is never shorter than the frame itself.
      const body = el.contentDocument?.body;
      if (body) {
        const height = Math.ceil(body.getBoundingClientRect().height) + 10;
        el.style.height = `${Math.min(Math.max(height, 32), 800)}px`;
      }
    };
    el.addEventListener("load", fit);
    if (el.contentDocument?.readyState === "complete") fit();
    return () => el.removeEventListener("load", fit);
  }, [markup]);
  return html`<iframe ref=${frame} class="html-frame" sandbox="allow-same-origin"
    title="HTML output" srcdoc=${frameStyle(dark) + markup}
    data-testid="result-html" />`;
}

function PlotlyResult({ figure, fallback }) {
  const box = useRef(null);
  const [failed, setFailed] = useState(null);
  useEffect(() => {
    const el = box.current;
    let cancelled = false;
    let plotly = null;
    loadPlotly()
      .then((Plotly) => {
        if (cancelled) return null;
        plotly = Plotly;
        const layout = { ...(figure.layout || {}), autosize: true };
        return Plotly.newPlot(el, figure.data, layout, {
          responsive: true,
          displaylogo: false,
        });
      })
      .catch((e) => !cancelled && setFailed(e.message || String(e)));
    return () => {
      cancelled = true;
      if (plotly) plotly.purge(el);
    };
  }, [figure]);
  if (failed) {
    return html`<div>
      <p class="muted small">This Plotly figure could not be drawn (${failed}).</p>
      ${fallback && html`<pre class="output">${fallback}</pre>`}
    </div>`;
  }
  return html`<div ref=${box} class="plotly-box" data-testid="result-plotly" />`;
}

function Result({ result, index }) {
  let body;
  let kind;
  if (result.png) {
    kind = "png";
    body = html`<img src=${`data:image/png;base64,${result.png}`} alt=${`Output ${index + 1}`} />`;
  } else if (result.jpeg) {
    kind = "jpeg";
    body = html`<img src=${`data:image/jpeg;base64,${result.jpeg}`} alt=${`Output ${index + 1}`} />`;
  } else if (result.svg) {
    kind = "svg";
    body = html`<img src=${svgSource(result.svg)} alt=${`Output ${index + 1}`} />`;
  } else if (result.html) {
    kind = "html";
    body = html`<${HtmlResult} markup=${result.html} />`;
  } else if (result.markdown) {
    kind = "markdown";
    body = html`<div class="markdown"
      dangerouslySetInnerHTML=${{ __html: renderMarkdown(result.markdown) }} />`;
  } else if (isPlotlyFigure(result.json)) {
    kind = "plotly";
    body = html`<${PlotlyResult} figure=${result.json} fallback=${result.text} />`;
  } else if (result.json !== undefined && result.json !== null) {
    kind = "json";
    body = html`<pre class="output">${JSON.stringify(result.json, null, 2)}</pre>`;
  } else if (result.text) {
    kind = "text";
    body = html`<pre class="output">${result.text}</pre>`;
  } else {
    return null;
  }
  return html`<figure class=${`result result-${kind}`} data-testid="result"
    data-kind=${kind}>${body}</figure>`;
}

function ExecError({ error }) {
  return html`
    <div class="exec-error" data-testid="exec-error" role="alert">
      <div class="exec-error-head"><${Alert} size=${16} />
        <span><strong>${error.name || "Error"}</strong>${error.value ? `: ${error.value}` : ""}</span>
      </div>
      ${error.traceback && html`<pre class="output">${stripAnsi(error.traceback)}</pre>`}
    </div>`;
}

function InterpreterResult({ result }) {
  const stdout = (result.stdout || []).join("");
  const stderr = (result.stderr || []).join("");
  const results = result.results || [];
  const nothing = !stdout && !stderr && !result.error && results.length === 0;
  return html`
    <div class="interpreter" data-testid="interpreter-result">
      ${stdout && html`<section class="stream">
        <h3 class="stream-label">stdout</h3>
        <pre class="output" data-testid="stdout">${stdout}</pre></section>`}
      ${stderr && html`<section class="stream">
        <h3 class="stream-label">stderr</h3>
        <pre class="output stderr" data-testid="stderr">${stderr}</pre></section>`}
      ${results.map((r, i) => html`<${Result} key=${i} result=${r} index=${i} />`)}
      ${result.error && html`<${ExecError} error=${result.error} />`}
      ${nothing && html`<p class="muted" data-testid="no-output">The code ran and showed no
        output.</p>`}
    </div>`;
}

function WebResult({ result, reloadKey }) {
  if (!result.url) {
    const error = result.error || {};
    // Installer and start-up failures carry the tool's own multi-line output: keep its lines.
    const value = error.value || "The sandbox returned no preview address.";
    const title = error.name === "InstallError" ? "Installing the packages failed" : "No live preview";
    return html`<div class="preview-message">
      <div class="exec-error" data-testid="preview-unavailable" role="alert">
        <div class="exec-error-head"><${Alert} size=${16} /><strong>${title}</strong></div>
        ${value.includes("\n") ? html`<pre class="output">${value}</pre>` : html`<p>${value}</p>`}
        ${error.name && html`<p class="muted small">${error.name}</p>`}
      </div>
    </div>`;
  }
  return null; // the frame itself is kept by Preview, so that it never has to load again
}

// While the frame is not shown yet it loads behind the phase display: laid out at full size
// and transparent (not display:none, and not offscreen, where Chromium stops rendering it).
const PENDING_FRAME = {
  position: "absolute",
  inset: "0",
  height: "100%",
  opacity: "0",
  pointerEvents: "none",
};

function WebFrame({ url, shown }) {
  return html`<iframe class="web-frame" src=${url} title="App preview"
    data-testid="preview-iframe" data-state=${shown ? "shown" : "loading"}
    aria-hidden=${shown ? undefined : "true"} tabindex=${shown ? undefined : "-1"}
    style=${shown ? {} : PENDING_FRAME}
    sandbox="allow-forms allow-scripts allow-same-origin allow-popups allow-modals allow-downloads" />`;
}

function Status({ sandbox, result, web, reloadKey }) {
  const label = PHASES[sandbox?.phase] || "Preparing the sandbox";
  if (!sandbox) {
    return html`<div class="panel-empty muted" data-testid="preview-empty">The preview appears
      when the fragment is complete.</div>`;
  }
  if (sandbox.status === "running") {
    return html`<div class="panel-empty" data-testid="sandbox-phase" data-phase=${sandbox.phase}
      role="status"><span class="spinner" /> ${label}…</div>`;
  }
  if (sandbox.status === "error") {
    return html`<div class="preview-message">
      <div class="exec-error" data-testid="sandbox-error" role="alert">
        <div class="exec-error-head"><${Alert} size=${16} /><strong>The sandbox failed</strong></div>
        <p>${sandbox.error}</p>
      </div></div>`;
  }
  return web ? html`<${WebResult} result=${result} reloadKey=${reloadKey} />`
    : html`<${InterpreterResult} result=${result} />`;
}

/**
 * The sandbox's result. A web app's page may already be open: `prepared` is the conversation's
 * sandbox made ready while the model was writing, whose page loads hidden behind the phase
 * display; when the run answers the same URL the frame is only revealed (the dev server has
 * already swapped the new code into it), else it loads the URL the run answered.
 */
export function Preview({ sandbox, prepared, reloadKey }) {
  const result = sandbox?.status === "done" ? sandbox.result || {} : null;
  const web = Boolean(result) && !Array.isArray(result.stdout) && !Array.isArray(result.results);
  const pending = !sandbox || sandbox.status === "running";
  const url = web && result.url ? result.url : (pending && prepared?.url) || null;
  const shown = web && Boolean(result.url);
  // One tree whatever the state, so the iframe element stays the same one when it is revealed.
  return html`<div class="preview" data-testid=${result ? "preview" : "preview-waiting"}
    style=${{ position: "relative" }}>
    ${url ? html`<${WebFrame} key=${reloadKey} url=${url} shown=${shown} />` : null}
    ${shown ? null : html`<${Status} sandbox=${sandbox} result=${result} web=${web}
      reloadKey=${reloadKey} />`}
  </div>`;
}
