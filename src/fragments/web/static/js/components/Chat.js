// The conversation: messages with streamed commentary, fragment cards, usage and errors.
import { html, useLayoutEffect, useMemo, useRef } from "../lib/html.js";
import { renderMarkdown } from "../lib/markdown.js";
import { Alert, Code, Refresh, Sparkle } from "./icons.js";

const EXAMPLES = [
  "Plot a sine and a cosine wave with matplotlib",
  "Analyse a random sales dataset with pandas and chart it",
  "Build a to-do list app with Next.js and Tailwind",
  "A Streamlit dashboard of simulated stock prices",
];

const formatTokens = (n) =>
  n >= 10000 ? `${(n / 1000).toFixed(0)}k` : n >= 1000 ? `${(n / 1000).toFixed(1)}k` : `${n}`;

function Usage({ usage, provider }) {
  const parts = [];
  if (provider?.model) parts.push(provider.model);
  if (usage) {
    parts.push(`${formatTokens(usage.input_tokens || 0)} in`);
    parts.push(`${formatTokens(usage.output_tokens || 0)} out`);
    if (usage.cache_read_tokens) parts.push(`${formatTokens(usage.cache_read_tokens)} cached`);
    if (typeof usage.cost_usd === "number") {
      parts.push(`$${usage.cost_usd < 0.01 ? usage.cost_usd.toFixed(4) : usage.cost_usd.toFixed(3)}`);
    }
  }
  if (parts.length === 0) return null;
  return html`
    <div class="usage" data-testid=${usage ? "usage" : "provider-info"}>
      ${parts.join(" · ")}
      ${provider?.fallback && html`<span class="badge badge-warn"
        title="The first model failed; another answered">fallback</span>`}
    </div>`;
}

// Why the model asked for did not answer (the `reason` of a fallback `provider` event).
const FALLBACK_WORDS = {
  server_error: "had a server error",
  overloaded: "was overloaded",
  rate_limited: "was rate limited",
  timeout: "timed out",
  connection_failed: "could not be reached",
  connection_lost: "dropped the connection",
  tls_error: "failed a secure connection",
  no_first_token: "did not start answering in time",
  stalled: "stopped answering mid-way",
  stream_cut: "ended its answer early",
  unreadable: "sent an unreadable answer",
  unhealthy: "is failing right now",
};

function modelName(models, ref) {
  const found = (models || []).find((m) => m.id === ref?.model && m.providerId === ref?.provider);
  return found ? found.name : ref?.model || "another model";
}

function FallbackBanner({ message, models }) {
  const fallback = message.fallback;
  const provider = message.provider;
  if (!fallback || !provider?.fallback) return null;
  const words = FALLBACK_WORDS[fallback.reason] || "failed";
  return html`
    <div class="note fallback-note" role="status" data-testid="fallback-banner">
      Answered by ${modelName(models, provider)} because ${modelName(models, fallback.from)}
      ${" "}${words}.
    </div>`;
}

function Markdown({ text, testid }) {
  const rendered = useMemo(() => renderMarkdown(text), [text]);
  return html`<div class="markdown" data-testid=${testid}
    dangerouslySetInnerHTML=${{ __html: rendered }} />`;
}

function FragmentCard({ message, selected, onSelect }) {
  const fragment = message.object;
  const title = fragment.title || "Untitled fragment";
  const busy = message.streaming && !message.final;
  return html`
    <button type="button" class=${`fragment-card${selected ? " selected" : ""}`}
      data-testid="fragment-card" aria-pressed=${selected ? "true" : "false"}
      onClick=${() => onSelect(message.id)}>
      <span class="fragment-icon" aria-hidden="true">
        ${busy ? html`<span class="spinner" />` : html`<${Code} size=${18} />`}
      </span>
      <span class="fragment-text">
        <span class="fragment-title">${title}</span>
        <span class="fragment-desc">
          ${busy ? "Writing code…" : fragment.description || "Open the code and preview"}
        </span>
      </span>
    </button>`;
}

function UserMessage({ message }) {
  return html`
    <div class="message user" data-testid="message-user">
      <div class="bubble">
        ${message.content.map((part, i) =>
          part.type === "image"
            ? html`<img key=${i} class="attachment" src=${part.image} alt="Attached image" />`
            : html`<p key=${i} class="user-text">${part.text}</p>`)}
      </div>
    </div>`;
}

function AssistantMessage({ message, selected, onSelect, models }) {
  const fragment = message.object;
  const commentary = fragment?.commentary || "";
  const waiting = message.streaming && !commentary;
  const hasFragment = fragment && (fragment.code || fragment.title || fragment.files?.length);
  return html`
    <div class="message assistant" data-testid="message-assistant"
      data-state=${message.streaming ? "streaming" : "done"}>
      <div class="avatar" aria-hidden="true"><${Sparkle} size=${14} /></div>
      <div class="assistant-body">
        ${waiting
          ? html`<div class="thinking" data-testid="thinking"><span /><span /><span />
              <span class="sr-only">The model is answering</span></div>`
          : html`<${Markdown} text=${commentary} testid="commentary" />`}
        ${hasFragment && html`<${FragmentCard} message=${message} selected=${selected}
          onSelect=${onSelect} />`}
        <${FallbackBanner} message=${message} models=${models} />
        ${message.stopped && html`<div class="note" data-testid="stopped-note">Stopped.</div>`}
        ${!message.streaming && !message.stopped && !message.final && html`
          <div class="note" data-testid="incomplete-note">The answer is incomplete.</div>`}
        <${Usage} usage=${message.usage} provider=${message.provider} />
      </div>
    </div>`;
}

export function MessageList({ messages, models, selectedId, onSelect, streaming, onExample }) {
  const list = useRef(null);
  const stick = useRef(true);
  const onScroll = () => {
    const el = list.current;
    stick.current = el.scrollHeight - el.scrollTop - el.clientHeight < 48;
  };
  useLayoutEffect(() => {
    // Follow the stream unless the reader scrolled up to read.
    const el = list.current;
    if (el && stick.current) el.scrollTop = el.scrollHeight;
  });
  if (messages.length === 0) {
    return html`
      <div class="empty" data-testid="empty-state">
        <div class="empty-mark" aria-hidden="true"><${Sparkle} size=${28} /></div>
        <h1>What do you want to build?</h1>
        <p class="muted">Describe an app or an analysis. The model writes the code, a sandbox
          runs it, and the result shows up beside the chat.</p>
        <div class="examples">
          ${EXAMPLES.map((text) => html`
            <button type="button" class="chip" onClick=${() => onExample(text)}>${text}</button>`)}
        </div>
      </div>`;
  }
  return html`
    <div class="messages" ref=${list} onScroll=${onScroll} role="log" aria-live="polite"
      aria-busy=${streaming ? "true" : "false"} aria-label="Conversation"
      data-testid="message-list">
      ${messages.map((m) =>
        m.role === "user"
          ? html`<${UserMessage} key=${m.id} message=${m} />`
          : html`<${AssistantMessage} key=${m.id} message=${m} selected=${m.id === selectedId}
              onSelect=${onSelect} models=${models} />`)}
    </div>`;
}

export function ErrorBanner({ error, onRetry, onDismiss }) {
  if (!error) return null;
  const warning = error.kind === "warning";
  return html`
    <div class=${`banner ${warning ? "banner-warn" : "banner-error"}`}
      role="alert" data-testid="error-banner" data-kind=${error.kind}>
      <${Alert} size=${16} />
      <span class="banner-text" data-testid="error-detail">${error.detail}</span>
      ${error.canRetry && html`
        <button type="button" class="btn btn-small" data-testid="retry-button" onClick=${onRetry}>
          <${Refresh} size=${14} /> Try again
        </button>`}
      <button type="button" class="btn btn-small btn-ghost" aria-label="Dismiss"
        onClick=${onDismiss}>Dismiss</button>
    </div>`;
}
