"""The node scaffolds of the web templates (`node/<template id>/`). The registry itself lives in
`fragments.templates`, low enough for the prompt, the API and every backend to read it; its
names are re-exported here for the backends that import them from their own package."""

from fragments.templates import TEMPLATES, Template, TemplateId, get_template, resolve_templates

__all__ = ["TEMPLATES", "Template", "TemplateId", "get_template", "resolve_templates"]
