// Copies the browser-ready ES modules the UI imports from node_modules into the Python package's
// static folder. No bundler for these: each file is copied as published, except that bare
// specifiers (`from "preact"`) are rewritten to relative paths, since the page has no import map
// (an inline one would need a CSP exception). Run from anywhere: `node frontend/copy-vendor.mjs`.
//
// The one exception is CodeMirror 6 (the code view's editor), bundled here once with esbuild into
// vendor/codemirror.js. It is ~30 small ES modules (@codemirror/*, @lezer/*, style-mod, crelt,
// w3c-keyname) importing each other by bare names, with nested version ranges: rewriting every
// import by hand is brittle, and an import map would need an inline script (a CSP exception) or
// one more file kept in sync with the lock file. esbuild is an npm devDependency pinned by the
// lock file and runs only here, at `make install`; nothing is fetched or built at run time, and
// the page still loads plain ES modules. The bundle's packages, versions and licences are read
// from esbuild's metafile, so versions.json and licenses/ stay complete when they change.

import { copyFileSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const modules = join(here, "node_modules");
const out = join(here, "..", "src", "fragments", "web", "static", "vendor");

const HLJS = "@highlightjs/cdn-assets";
const LANGUAGES = ["python", "typescript", "javascript", "xml", "json", "bash", "css"];

// [source under node_modules, destination under vendor/, {bare specifier: relative path}]
const files = [
  ["preact/dist/preact.mjs", "preact.js"],
  ["preact/hooks/dist/hooks.mjs", "preact-hooks.js", { preact: "./preact.js" }],
  ["htm/dist/htm.mjs", "htm.js"],
  ["marked/lib/marked.esm.js", "marked.js"],
  ["dompurify/dist/purify.es.mjs", "purify.js"],
  [`${HLJS}/es/core.min.js`, "highlight/core.js"],
  // A classic script (UMD, sets window.Plotly), loaded only when a Plotly figure is shown.
  // The cartesian bundle: no eval (CSP-safe), covers the chart types notebooks mostly make.
  ["plotly.js-cartesian-dist-min/plotly-cartesian.min.js", "plotly-cartesian.js"],
  ...LANGUAGES.map((lang) => [`${HLJS}/es/languages/${lang}.min.js`, `highlight/${lang}.js`]),
];

const licenses = {
  preact: "preact/LICENSE",
  htm: "htm/LICENSE",
  marked: "marked/LICENSE",
  dompurify: "dompurify/LICENSE",
  "highlight.js": `${HLJS}/LICENSE`,
  "plotly.js": "plotly.js-cartesian-dist-min/LICENSE",
};

function rewrite(text, specifiers) {
  let result = text;
  for (const [bare, relative] of Object.entries(specifiers)) {
    // Minified (`from"preact"`) and spaced (`from 'preact'`) forms, both quote styles.
    const pattern = new RegExp(`(from\\s*|import\\s*\\(?\\s*)(["'])${bare}\\2`, "g");
    const before = result;
    result = result.replace(pattern, `$1$2${relative}$2`);
    if (result === before) throw new Error(`no import of "${bare}" found to rewrite`);
  }
  return result;
}

function stripSourceMap(text) {
  // The maps are not copied; a dangling reference only makes devtools complain.
  return text.replace(/\n?\/\/# sourceMappingURL=\S+\s*$/, "\n");
}

rmSync(out, { recursive: true, force: true });
mkdirSync(join(out, "highlight"), { recursive: true });
mkdirSync(join(out, "licenses"), { recursive: true });

for (const [source, destination, specifiers] of files) {
  const text = readFileSync(join(modules, source), "utf8");
  writeFileSync(join(out, destination), stripSourceMap(rewrite(text, specifiers ?? {})));
}
for (const [name, source] of Object.entries(licenses)) {
  copyFileSync(join(modules, source), join(out, "licenses", `${name}.txt`));
}

const versions = {};
for (const name of ["preact", "htm", "marked", "dompurify", HLJS, "plotly.js-cartesian-dist-min"]) {
  versions[name] = JSON.parse(readFileSync(join(modules, name, "package.json"), "utf8")).version;
}

// CodeMirror: one minified ES module exporting what codemirror-entry.mjs names.
const bundled = await build({
  entryPoints: [join(here, "codemirror-entry.mjs")],
  outfile: join(out, "codemirror.js"),
  bundle: true,
  format: "esm",
  minify: true,
  target: "es2020",
  legalComments: "none", // the licences are copied whole into licenses/ below
  metafile: true,
  logLevel: "warning",
});
const packageOf = (input) => {
  const match = /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(input);
  return match ? match[1] : null;
};
const codemirrorPackages = new Set();
for (const input of Object.keys(bundled.metafile.inputs)) {
  const name = packageOf(input);
  if (name) codemirrorPackages.add(name);
}
for (const name of [...codemirrorPackages].sort()) {
  const root = join(modules, name);
  versions[name] = JSON.parse(readFileSync(join(root, "package.json"), "utf8")).version;
  const license = ["LICENSE", "LICENSE.md", "LICENSE.txt"].map((f) => join(root, f)).find(existsSync);
  if (!license) throw new Error(`${name} is bundled into codemirror.js but has no LICENSE file`);
  copyFileSync(license, join(out, "licenses", `${name.replace("/", "__")}.txt`));
}
writeFileSync(join(out, "versions.json"), JSON.stringify(versions, null, 2) + "\n");
console.log(`vendor files copied to ${out}:`, versions);
