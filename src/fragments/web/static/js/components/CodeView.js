// Highlighted code with line numbers, a file list for multi-file fragments, copy and download;
// in edit mode, the same layout with an editor (CodeMirror) in place of the highlighted code.
import {
  html,
  ThemeContext,
  useContext,
  useEffect,
  useLayoutEffect,
  useMemo,
  useRef,
  useState,
} from "../lib/html.js";
import { copyText } from "../lib/clipboard.js";
import { createEditor, loadEditor } from "../lib/editor.js";
import { highlight, languageFor } from "../lib/highlight.js";
import { Check, Copy, Download, File } from "./icons.js";

/** The files of a fragment: `files` wins over `file_path` + `code`. */
export function fragmentFiles(fragment) {
  if (!fragment) return [];
  if (Array.isArray(fragment.files) && fragment.files.length > 0) {
    return fragment.files.map((f) => ({ path: f.file_path || "untitled", code: f.file_content || "" }));
  }
  if (!fragment.code && !fragment.file_path) return [];
  return [{ path: fragment.file_path || "untitled", code: fragment.code || "" }];
}

function download(path, text) {
  const url = URL.createObjectURL(new Blob([text], { type: "text/plain;charset=utf-8" }));
  const a = document.createElement("a");
  a.href = url;
  a.download = path.split("/").pop() || "code.txt";
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

export function CodeActions({ file }) {
  const [copied, setCopied] = useState(false);
  useEffect(() => {
    if (!copied) return undefined;
    const timer = setTimeout(() => setCopied(false), 1500);
    return () => clearTimeout(timer);
  }, [copied]);
  if (!file) return null;
  return html`
    <button type="button" class="btn btn-icon" data-testid="copy-button"
      aria-label=${copied ? "Copied" : "Copy code"} title=${copied ? "Copied" : "Copy code"}
      onClick=${async () => setCopied(await copyText(file.code))}>
      ${copied ? html`<${Check} />` : html`<${Copy} />`}
    </button>
    <button type="button" class="btn btn-icon" data-testid="download-button"
      aria-label="Download file" title="Download file"
      onClick=${() => download(file.path, file.code)}><${Download} /></button>`;
}

/**
 * The fragment's files as the user edited them: `drafts` maps a path to its edited text (the
 * files not in it are unchanged). `files` wins over `code`, as in `fragmentFiles`.
 */
export function editedFragment(fragment, drafts) {
  const edited = { ...fragment, commentary: "Edited by hand." };
  if (Array.isArray(fragment.files) && fragment.files.length > 0) {
    edited.files = fragment.files.map((f) => {
      const text = drafts[f.file_path || "untitled"];
      return text === undefined ? f : { ...f, file_content: text };
    });
  } else {
    const text = drafts[fragment.file_path || "untitled"];
    if (text !== undefined) edited.code = text;
  }
  return edited;
}

/** One file in CodeMirror; `onChange(text)` after each edit. Remounted per file (`key`). */
function CodeEditor({ file, text, onChange, onRun }) {
  const theme = useContext(ThemeContext);
  const host = useRef(null);
  const editor = useRef(null);
  const latest = useRef(onChange);
  latest.current = onChange;
  const run = useRef(onRun);
  run.current = onRun;
  const [failed, setFailed] = useState(null);
  const [ready, setReady] = useState(false);
  useEffect(() => {
    let cancelled = false;
    loadEditor()
      .then((loaded) => {
        if (cancelled || !host.current) return;
        editor.current = createEditor(loaded, host.current, {
          doc: text,
          path: file.path,
          dark: theme === "dark",
          onChange: (next) => latest.current(next),
          onRun: () => run.current?.(),
        });
        setReady(true);
        editor.current.view.focus();
      })
      .catch(() => setFailed("The editor could not be loaded; reload the page and try again."));
    return () => {
      cancelled = true;
      editor.current?.destroy();
      editor.current = null;
    };
  }, []);
  useEffect(() => editor.current?.setDark(theme === "dark"), [theme]);
  return html`
    <div class="code-editor" data-testid="code-editor" data-path=${file.path}
      data-state=${failed ? "failed" : ready ? "ready" : "loading"}>
      ${failed && html`<div class="panel-empty muted" role="alert">${failed}</div>`}
      ${!ready && !failed && html`<div class="panel-empty muted"><span class="spinner" />
        Loading the editor…</div>`}
      <div class="code-editor-host" ref=${host} />
    </div>`;
}

export function CodeView({ files, active, onActive, streaming, drafts, onDraft, onRun }) {
  const file = files[Math.min(active, files.length - 1)];
  const code = file ? file.code : "";
  const language = languageFor(file?.path);
  const highlighted = useMemo(() => highlight(code, language), [code, language]);
  const lineCount = useMemo(
    () => (code.replace(/\n$/, "").match(/\n/g)?.length ?? 0) + 1,
    [code],
  );
  const gutter = useMemo(
    () => Array.from({ length: lineCount }, (_, i) => i + 1).join("\n"),
    [lineCount],
  );
  const scroller = useRef(null);
  const follow = useRef(true);
  useLayoutEffect(() => {
    // While code streams in, keep its growing end in view unless the reader scrolled away.
    const el = scroller.current;
    if (el && streaming && follow.current) el.scrollTop = el.scrollHeight;
  }, [code, streaming]);

  if (!file) {
    return html`<div class="panel-empty muted" data-testid="code-empty">
      ${streaming ? html`<span class="spinner" /> Waiting for code…` : "No code in this fragment."}
    </div>`;
  }
  return html`
    <div class="code-layout">
      ${files.length > 1 && html`
        <nav class="file-list" aria-label="Files" data-testid="file-list">
          ${files.map((f, i) => html`
            <button type="button" key=${f.path} class=${`file-item${i === active ? " active" : ""}`}
              aria-current=${i === active ? "true" : undefined} onClick=${() => onActive(i)}
              title=${f.path}>
              <${File} size=${14} /><span>${f.path}</span>
              ${drafts && drafts[f.path] !== undefined && drafts[f.path] !== f.code
                && html`<span class="edited-dot" aria-label="edited" title="Edited">•</span>`}
            </button>`)}
        </nav>`}
      ${drafts ? html`<${CodeEditor} key=${file.path} file=${file}
        text=${drafts[file.path] ?? file.code} onChange=${(text) => onDraft(file.path, text)}
        onRun=${onRun} />`
      : html`<div class="code-scroll" ref=${scroller} tabindex="0" aria-label=${`Code of ${file.path}`}
        onScroll=${(e) => {
          const el = e.currentTarget;
          follow.current = el.scrollHeight - el.scrollTop - el.clientHeight < 32;
        }}>
        <pre class="code"><span class="gutter" aria-hidden="true">${gutter}</span><code
          class=${`hljs${language ? ` language-${language}` : ""}`} data-testid="code-view"
          data-state=${streaming ? "streaming" : "final"} data-path=${file.path}
          dangerouslySetInnerHTML=${{ __html: highlighted }} /></pre>
      </div>`}
    </div>`;
}
