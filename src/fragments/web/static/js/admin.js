// Entry point of the operator view (/admin).
import { AdminPage } from "./admin/AdminPage.js";
import { html, render } from "./lib/html.js";

render(html`<${AdminPage} />`, document.getElementById("admin"));
