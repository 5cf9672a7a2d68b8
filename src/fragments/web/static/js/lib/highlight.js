// highlight.js core with only the languages the templates produce.
import hljs from "../../vendor/highlight/core.js";
import bash from "../../vendor/highlight/bash.js";
import css from "../../vendor/highlight/css.js";
import javascript from "../../vendor/highlight/javascript.js";
import json from "../../vendor/highlight/json.js";
import python from "../../vendor/highlight/python.js";
import typescript from "../../vendor/highlight/typescript.js";
import xml from "../../vendor/highlight/xml.js";

hljs.registerLanguage("python", python);
hljs.registerLanguage("typescript", typescript);
hljs.registerLanguage("javascript", javascript);
hljs.registerLanguage("xml", xml);
hljs.registerLanguage("json", json);
hljs.registerLanguage("bash", bash);
hljs.registerLanguage("css", css);

const BY_EXTENSION = {
  py: "python",
  ts: "typescript",
  tsx: "typescript",
  mts: "typescript",
  js: "javascript",
  jsx: "javascript",
  mjs: "javascript",
  cjs: "javascript",
  vue: "xml", // no Vue grammar in core; HTML highlighting reads well for SFCs
  html: "xml",
  svg: "xml",
  xml: "xml",
  json: "json",
  sh: "bash",
  bash: "bash",
  css: "css",
};

export function languageFor(path) {
  const ext = (path || "").split(".").pop().toLowerCase();
  return BY_EXTENSION[ext] || "";
}

const escape = (text) =>
  text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");

/** Highlighted HTML for code (escaped plain text when the language is unknown). */
export function highlight(code, language) {
  if (!language) return escape(code);
  try {
    return hljs.highlight(code, { language, ignoreIllegals: true }).value;
  } catch {
    return escape(code);
  }
}
