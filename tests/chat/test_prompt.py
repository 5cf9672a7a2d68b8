"""The system prompt and the tool schema: short, and still saying what the sandbox depends on
(whole programs, relative paths, the template's port and file, extra packages declared and never
written as dependency files); templates listed by what the request needs."""

from __future__ import annotations

import json

from fragments.chat.prompt import system_prompt
from fragments.llm.wire import fragment_schema
from fragments.sandbox.templates import TEMPLATES, resolve_templates

ALL = resolve_templates("auto")


def test_the_rules_that_matter_are_there_in_every_form() -> None:
    for prompt in (
        system_prompt(ALL),
        system_prompt(resolve_templates("gradio-developer")),
        system_prompt(ALL, current="code-interpreter-v1"),
    ):
        assert "whole program" in prompt
        assert "file_path is relative" in prompt
        assert "port" in prompt
        assert "additional_dependencies" in prompt
        assert "install_dependencies_command" in prompt
        assert "requirements.txt" in prompt
        assert "package.json" in prompt


def test_a_new_app_with_auto_lists_every_template_in_full() -> None:
    prompt = system_prompt(ALL)
    for template in TEMPLATES.values():
        assert template.instructions in prompt
        assert f"file {template.file}" in prompt
    assert "port 7860" in prompt
    assert "port none" in prompt
    assert "nextjs@14" in prompt


def test_a_fixed_template_describes_only_that_one() -> None:
    prompt = system_prompt(resolve_templates("gradio-developer"))
    assert TEMPLATES["gradio-developer"].instructions in prompt
    for other in ("streamlit-developer", "nextjs-developer", "code-interpreter-v1"):
        assert other not in prompt


def test_an_edit_describes_its_own_template_and_names_the_others_briefly() -> None:
    prompt = system_prompt(ALL, current="code-interpreter-v1", message="make the bars blue")
    assert TEMPLATES["code-interpreter-v1"].instructions in prompt
    assert TEMPLATES["gradio-developer"].instructions not in prompt
    # The others stay reachable: id, file and port.
    assert "gradio-developer (app.py, port 7860)" in prompt
    assert "nextjs-developer (pages/index.tsx, port 3000)" in prompt
    assert len(prompt) < len(system_prompt(ALL)) * 0.7


def test_an_edit_that_names_another_framework_gets_its_instructions() -> None:
    prompt = system_prompt(ALL, current="code-interpreter-v1", message="Turn it into a Gradio app")
    assert TEMPLATES["gradio-developer"].instructions in prompt
    assert TEMPLATES["code-interpreter-v1"].instructions in prompt
    assert TEMPLATES["streamlit-developer"].instructions not in prompt


def test_the_tool_schema_has_every_field_and_no_prose() -> None:
    schema = fragment_schema()
    text = json.dumps(schema)
    assert list(schema["properties"]) == [
        "commentary",
        "template",
        "title",
        "description",
        "additional_dependencies",
        "has_additional_dependencies",
        "install_dependencies_command",
        "port",
        "file_path",
        "files",
        "code",
    ]
    files = schema["properties"]["files"]["items"]["properties"]
    assert set(files) == {"file_path", "file_content"}
    assert "$ref" not in text
    assert '"description": "' not in text  # the field named description is kept, prose is not
    assert '"default"' not in text
    assert len(text) < 800
