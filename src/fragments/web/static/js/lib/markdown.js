// Markdown to sanitized HTML: marked renders, DOMPurify strips anything executable.
import { Marked } from "../../vendor/marked.js";
import DOMPurify from "../../vendor/purify.js";

const parser = new Marked({ gfm: true, breaks: false, async: false });

DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  // Links leave the app in a new tab, without handing it a reference to this window.
  if (node.tagName === "A" && node.hasAttribute("href")) {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer");
  }
});

export function renderMarkdown(text) {
  if (!text) return "";
  return DOMPurify.sanitize(parser.parse(text), {
    USE_PROFILES: { html: true },
    FORBID_TAGS: ["style", "form", "input", "button", "textarea", "select"],
    FORBID_ATTR: ["style"],
  });
}
