"""The registry of templates: one spec per template, the single source for prompts, the API and
the sandbox backends."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from fragments.errors import BadRequest
from fragments.sandbox.templates.runtimes import (
    GRADIO,
    INTERPRETER,
    NEXTJS,
    NUXT,
    STREAMLIT,
    RuntimeStrategy,
)

TemplateId = Literal[
    "code-interpreter-v1",
    "nextjs-developer",
    "vue-developer",
    "streamlit-developer",
    "gradio-developer",
]


@dataclass(frozen=True, slots=True)
class Template:
    """What a model needs to know to write for a template, and what a sandbox needs to run it."""

    id: TemplateId
    name: str
    instructions: str
    file: str
    port: int | None
    runtime: Literal["interpreter", "web"]
    language: Literal["python", "node"]
    libraries: tuple[str, ...]
    # How its code runs in a sandbox: build recipe, server, placeholder, warm-up, reload.
    strategy: RuntimeStrategy
    # Packages the template's environment is built with (pip names for Python templates).
    packages: tuple[str, ...] = field(default=())

    def to_public(self) -> dict[str, object]:
        """The template as `GET /api/templates` lists it (the original's templates.json shape)."""
        return {
            "id": self.id,
            "name": self.name,
            "lib": list(self.libraries),
            "file": self.file,
            "instructions": self.instructions,
            "port": self.port,
        }


TEMPLATES: dict[str, Template] = {
    t.id: t
    for t in (
        Template(
            id="code-interpreter-v1",
            name="Python data analyst",
            instructions=(
                "Runs the code as one Jupyter notebook cell. Strong on data analysis; may use "
                "rich visualisations (matplotlib, seaborn, plotly) to explain the results. "
                "Display charts with plt.show() or by leaving a figure as the last expression."
            ),
            file="script.py",
            port=None,
            runtime="interpreter",
            language="python",
            strategy=INTERPRETER,
            libraries=("python", "jupyter", "numpy", "pandas", "matplotlib", "seaborn", "plotly"),
            packages=(
                "ipykernel",
                # plotly renders in a kernel through IPython's display, which needs nbformat.
                "nbformat",
                "numpy",
                "pandas",
                "matplotlib",
                "seaborn",
                "plotly",
            ),
        ),
        Template(
            id="nextjs-developer",
            name="Next.js developer",
            instructions=(
                "A Next.js 14 app using the pages router, TypeScript and Tailwind CSS, which "
                "reloads automatically. Write the page at pages/index.tsx."
            ),
            file="pages/index.tsx",
            port=3000,
            runtime="web",
            language="node",
            strategy=NEXTJS,
            libraries=(
                "nextjs@14",
                "typescript",
                "@types/node",
                "@types/react",
                "@types/react-dom",
                "postcss",
                "tailwindcss",
            ),
        ),
        Template(
            id="vue-developer",
            name="Vue.js developer",
            instructions=(
                "A Nuxt 4 (Vue 3) app with Tailwind CSS, which reloads automatically. Use it only "
                "when asked specifically for a Vue app. Write the root component at app/app.vue."
            ),
            file="app/app.vue",
            port=3000,
            runtime="web",
            language="node",
            strategy=NUXT,
            libraries=("vue@latest", "nuxt@4", "tailwindcss"),
        ),
        Template(
            id="streamlit-developer",
            name="Streamlit developer",
            instructions="A Streamlit app that reloads automatically.",
            file="app.py",
            port=8501,
            runtime="web",
            language="python",
            strategy=STREAMLIT,
            libraries=(
                "streamlit",
                "pandas",
                "numpy",
                "matplotlib",
                "requests",
                "seaborn",
                "plotly",
            ),
            packages=(
                "streamlit",
                "pandas",
                "numpy",
                "matplotlib",
                "requests",
                "seaborn",
                "plotly",
            ),
        ),
        Template(
            id="gradio-developer",
            name="Gradio developer",
            instructions=(
                "A Gradio app. The gr.Blocks or gr.Interface object must be called `demo`; do not "
                "call demo.launch() yourself."
            ),
            file="app.py",
            port=7860,
            runtime="web",
            language="python",
            strategy=GRADIO,
            libraries=("gradio", "pandas", "numpy", "matplotlib", "requests", "seaborn", "plotly"),
            packages=("gradio", "pandas", "numpy", "matplotlib", "requests", "seaborn", "plotly"),
        ),
    )
}


def get_template(template_id: str) -> Template:
    """The template with this id, or a 400 that lists the valid ids."""
    template = TEMPLATES.get(template_id)
    if template is None:
        known = ", ".join(TEMPLATES)
        raise BadRequest(
            f"Unknown template '{template_id[:80]}'; use 'auto' or one of: {known}.",
            code="unknown_template",
        )
    return template


def resolve_templates(requested: str) -> list[Template]:
    """The templates a chat request may use: all of them for 'auto', else the one asked for."""
    if requested == "auto":
        return list(TEMPLATES.values())
    return [get_template(requested)]
