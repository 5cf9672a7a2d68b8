"""How each template's code runs in a sandbox: one strategy per template, referenced from its
registry entry, so that a backend asks the template what to do and never tests its id.

A strategy is data: its build recipe, the dev server's command line, the placeholder page a warm
slot serves, what a warm slot pre-loads and how a rewritten app is reloaded. The local backend
reads all of it; the E2B backend needs none of it (E2B's own templates carry their servers).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from fragments.templates import Template

# The launchers of the Python dev servers (their sources are the local backend's web_boot.py).
STREAMLIT_BOOT = "streamlit_boot.py"
GRADIO_BOOT = "gradio_boot.py"
# What a warm Streamlit slot renders once before it is pooled (the last element of its
# placeholder: once it arrives, the placeholder's run is done).
STREAMLIT_WARM_TEXT = "fragments-warm"

# Imported once at build time: fails the build early if a package is broken, and fills the
# matplotlib font cache so the first chart in a sandbox does not spend a second building it.
_CHART = """
import matplotlib.pyplot as plt
plt.figure(); plt.plot([1, 2]); plt.close("all")
"""


@dataclass(frozen=True, slots=True)
class RuntimeStrategy:
    """One template's runtime (see the module docstring)."""

    # The build recipe: a uv environment of the template's `packages`, or the Node scaffold
    # under templates/node/<template id> installed with npm.
    build: Literal["python", "node"]
    # Python: code run once in the new environment before it is marked built.
    build_check: str = ""
    # Node: files the first compile stores some seconds later; the build waits for them.
    build_caches: tuple[str, ...] = ()
    # The dev server's argv; `{python}`, `{boot}`, `{root}`, `{entry}`, `{port}` and `{host}`
    # are filled in. Empty for an interpreter (a Jupyter kernel, no server).
    server: tuple[str, ...] = ()
    # The launcher script a Python dev server is started through (the local backend's own).
    boot_script: str | None = None
    # Written to the entry file before a warm slot starts serving; None: the scaffold's page.
    placeholder: str | None = None
    # Streamlit runs a script only once a session opens: a warm slot opens one and waits for
    # the placeholder to render, so the first real app is an in-place rerun.
    renders_placeholder: bool = False
    # Interpreter: what a warm kernel imports while the pool fills (~1 s, not paid per run).
    warm_up: str = ""
    # Every dev server reloads a rewritten file by itself; Gradio's reload is waited for, so
    # that the URL answered serves the new code (or its error).
    waits_for_reload: bool = False

    def server_command(
        self, *, python: str, boot_dir: str, root: Path, entry: str, port: int, host: str
    ) -> list[str]:
        """The dev server's command line; empty when this runtime has no server."""
        boot = f"{boot_dir}/{self.boot_script}" if self.boot_script else ""
        values = {
            "python": python,
            "boot": boot,
            "root": str(root),
            "entry": entry,
            "port": str(port),
            "host": host,
        }
        return [arg.format(**values) for arg in self.server]


INTERPRETER = RuntimeStrategy(
    build="python",
    build_check="import ipykernel, matplotlib, numpy, pandas, plotly, seaborn\n"
    "import matplotlib_inline.backend_inline\n" + _CHART,
    warm_up="import numpy, pandas, matplotlib.pyplot\n",
)

STREAMLIT = RuntimeStrategy(
    build="python",
    build_check="import streamlit, matplotlib, numpy, pandas, plotly, seaborn\n" + _CHART,
    boot_script=STREAMLIT_BOOT,
    server=(
        "{python}",
        "{boot}",
        "run",
        "{entry}",
        "--server.port",
        "{port}",
        "--server.address",
        "{host}",
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        # The proxy is the only client and rewrites Origin; each preview is its own origin.
        "--server.enableCORS",
        "false",
        "--server.enableXsrfProtection",
        "false",
        # An open preview reruns when the fragment's file is rewritten (hot reload).
        "--server.runOnSave",
        "true",
        "--global.developmentMode",
        "false",
    ),
    placeholder=(
        "import streamlit as st\n"
        "st.title('Waiting for the app')\n"
        "st.write('The app will show here.')\n"
        f"st.caption('{STREAMLIT_WARM_TEXT}')\n"
    ),
    renders_placeholder=True,
)

GRADIO = RuntimeStrategy(
    build="python",
    build_check="import gradio, matplotlib, numpy, pandas, plotly, seaborn\n" + _CHART,
    boot_script=GRADIO_BOOT,
    server=("{python}", "{boot}", "{entry}", "{port}"),
    # Served in reload mode: the owner's app is swapped in.
    placeholder=(
        "import gradio as gr\n\n"
        "with gr.Blocks() as demo:\n"
        "    gr.Markdown('Waiting for the app.')\n"
    ),
    waits_for_reload=True,
)

NEXTJS = RuntimeStrategy(
    build="node",
    # webpack stores its persistent cache when idle, ~5 s after the first build.
    build_caches=(
        ".next/cache/webpack/client-development/index.pack.gz",
        ".next/cache/webpack/server-development/index.pack.gz",
    ),
    server=("{root}/node_modules/.bin/next", "dev", "-p", "{port}", "-H", "{host}"),
)

NUXT = RuntimeStrategy(
    build="node",
    server=("{root}/node_modules/.bin/nuxt", "dev", "--port", "{port}", "--host", "{host}"),
)


# One strategy per template of the registry (`fragments.templates`), keyed by its id: the registry
# stays the single list of templates, low enough for prompts and the API to read; how a template
# runs in a local sandbox is this package's business.
RUNTIMES: dict[str, RuntimeStrategy] = {
    "code-interpreter-v1": INTERPRETER,
    "nextjs-developer": NEXTJS,
    "vue-developer": NUXT,
    "streamlit-developer": STREAMLIT,
    "gradio-developer": GRADIO,
}


def runtime_of(template: Template) -> RuntimeStrategy:
    """How the template's code runs in a local sandbox."""
    return RUNTIMES[template.id]
