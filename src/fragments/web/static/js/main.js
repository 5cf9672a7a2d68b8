// Entry point: mount the app.
import { App } from "./components/App.js";
import { html, render } from "./lib/html.js";

render(html`<${App} />`, document.getElementById("app"));
