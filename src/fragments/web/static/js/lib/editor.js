// The code view's editor: CodeMirror 6, bundled into vendor/codemirror.js by `make install`
// (frontend/copy-vendor.mjs says why it is bundled). It is loaded on the first edit, so reading
// code never pays for it. One theme serves light and dark: its colours are the app's CSS
// variables, so the editor follows <html data-theme> like the highlighted view does.

let loading = null;

/** The editor library with the app's theme; loaded once, retried after a failed load. */
export function loadEditor() {
  loading ??= import("../../vendor/codemirror.js").then(withTheme).catch((error) => {
    loading = null;
    throw error;
  });
  return loading;
}

function withTheme(cm) {
  const { EditorView, HighlightStyle, syntaxHighlighting, tags: t } = cm;
  const theme = EditorView.theme({
    "&": { height: "100%", backgroundColor: "var(--code-bg)", color: "var(--text)" },
    "&.cm-focused": { outline: "none" },
    ".cm-scroller": { fontFamily: "var(--mono)", fontSize: "12.8px", lineHeight: "1.6" },
    ".cm-content": { caretColor: "var(--accent)", padding: "14px 0 24px" },
    ".cm-cursor, .cm-dropCursor": { borderLeftColor: "var(--accent)", borderLeftWidth: "2px" },
    ".cm-gutters": {
      backgroundColor: "var(--code-bg)",
      color: "var(--code-gutter)",
      border: "none",
    },
    ".cm-lineNumbers .cm-gutterElement": { padding: "0 10px 0 12px", minWidth: "40px" },
    ".cm-activeLine": { backgroundColor: "var(--code-active-line)" },
    ".cm-activeLineGutter": { backgroundColor: "transparent", color: "var(--text)" },
    ".cm-selectionBackground, ::selection": { backgroundColor: "var(--code-selection) !important" },
    ".cm-selectionMatch": { backgroundColor: "var(--accent-soft)" },
    "&.cm-focused .cm-matchingBracket": {
      backgroundColor: "var(--accent-soft)",
      outline: "1px solid var(--ring)",
    },
    ".cm-searchMatch": { backgroundColor: "var(--warn-soft)", outline: "1px solid var(--warn-border)" },
    ".cm-tooltip, .cm-panels": {
      backgroundColor: "var(--bg)",
      color: "var(--text)",
      border: "1px solid var(--border)",
    },
    ".cm-tooltip-autocomplete > ul > li[aria-selected]": {
      backgroundColor: "var(--accent-soft)",
      color: "var(--text)",
    },
    ".cm-foldPlaceholder": {
      backgroundColor: "var(--bg-muted)",
      border: "1px solid var(--border)",
      color: "var(--text-muted)",
    },
  });
  // The same token colours as the highlighted (read-only) view.
  const highlight = HighlightStyle.define([
    {
      tag: [t.keyword, t.controlKeyword, t.operatorKeyword, t.definitionKeyword, t.moduleKeyword,
        t.bool, t.null, t.self],
      color: "var(--hl-keyword)",
    },
    { tag: [t.string, t.special(t.string), t.regexp, t.docString], color: "var(--hl-string)" },
    { tag: [t.number, t.integer, t.float, t.atom, t.color, t.unit], color: "var(--hl-number)" },
    { tag: [t.comment, t.lineComment, t.blockComment], color: "var(--hl-comment)", fontStyle: "italic" },
    {
      tag: [t.function(t.variableName), t.function(t.definition(t.variableName)),
        t.function(t.propertyName), t.definition(t.className), t.className, t.heading],
      color: "var(--hl-title)",
    },
    { tag: [t.propertyName, t.attributeName, t.definition(t.propertyName)], color: "var(--hl-attr)" },
    { tag: [t.standard(t.variableName), t.typeName, t.special(t.variableName)], color: "var(--hl-builtin)" },
    { tag: [t.tagName, t.angleBracket], color: "var(--hl-tag)" },
    { tag: [t.meta, t.processingInstruction, t.documentMeta, t.annotation], color: "var(--hl-meta)" },
    { tag: t.invalid, color: "var(--danger)" },
  ]);
  return { cm, extensions: [theme, syntaxHighlighting(highlight)] };
}

/** The language support for a file, by its extension (none for an unknown one). */
function languageFor(cm, path) {
  const ext = (path || "").split(".").pop().toLowerCase();
  switch (ext) {
    case "py":
      return cm.python();
    case "js":
    case "mjs":
    case "cjs":
      return cm.javascript();
    case "jsx":
      return cm.javascript({ jsx: true });
    case "ts":
    case "mts":
      return cm.javascript({ typescript: true });
    case "tsx":
      return cm.javascript({ jsx: true, typescript: true });
    case "vue":
      return cm.vue();
    case "html":
    case "htm":
      return cm.html();
    case "css":
      return cm.css();
    case "json":
      return cm.json();
    default:
      return [];
  }
}

/**
 * An editor in `parent` holding `doc`; `onChange(text)` after every edit, `onRun()` on
 * Ctrl/Cmd+Enter. Returns `{view, setDark(dark), destroy()}`.
 */
export function createEditor(loaded, parent, { doc, path, dark, onChange, onRun }) {
  const { cm, extensions } = loaded;
  const darkness = new cm.Compartment();
  const view = new cm.EditorView({
    parent,
    state: cm.EditorState.create({
      doc,
      extensions: [
        cm.basicSetup,
        // Tab indents (Escape, then Tab, moves the focus on: CodeMirror's tab-focus mode).
        // Ctrl/Cmd+Enter runs, ahead of the default keymap's binding (insert a blank line).
        cm.Prec.highest(cm.keymap.of([
          cm.indentWithTab,
          { key: "Mod-Enter", preventDefault: true, run: () => (onRun ? (onRun(), true) : false) },
        ])),
        languageFor(cm, path),
        extensions,
        darkness.of(cm.EditorView.darkTheme.of(Boolean(dark))),
        cm.EditorView.contentAttributes.of({ "aria-label": `Edit ${path}` }),
        cm.EditorView.updateListener.of((update) => {
          if (update.docChanged) onChange(update.state.doc.toString());
        }),
      ],
    }),
  });
  return {
    view,
    setDark: (next) => view.dispatch({
      effects: darkness.reconfigure(cm.EditorView.darkTheme.of(Boolean(next))),
    }),
    destroy: () => view.destroy(),
  };
}
