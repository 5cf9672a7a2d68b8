// The CodeMirror 6 API the code view's editor uses, bundled once by copy-vendor.mjs into
// static/vendor/codemirror.js (see the comment there for why it is bundled, not copied).
export { Compartment, EditorState, Prec } from "@codemirror/state";
export { EditorView, keymap } from "@codemirror/view";
export { basicSetup } from "codemirror";
export { indentWithTab } from "@codemirror/commands";
export { HighlightStyle, syntaxHighlighting } from "@codemirror/language";
export { tags } from "@lezer/highlight";
export { python } from "@codemirror/lang-python";
export { javascript } from "@codemirror/lang-javascript";
export { html } from "@codemirror/lang-html";
export { css } from "@codemirror/lang-css";
export { json } from "@codemirror/lang-json";
export { vue } from "@codemirror/lang-vue";
