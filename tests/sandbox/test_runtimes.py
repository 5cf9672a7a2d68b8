"""Runtime strategies: every template in the registry carries one, and the local backend's build
recipes, server commands and placeholders come from it rather than from template ids."""

from __future__ import annotations

from pathlib import Path

from fragments.sandbox.local.build import BUILDABLE, TemplateEnv, is_buildable
from fragments.sandbox.local.node_build import NODE_TEMPLATES
from fragments.sandbox.local.web import server_command
from fragments.sandbox.local.web_boot import BOOT_DIR, SOURCES
from fragments.sandbox.templates import TEMPLATES
from fragments.sandbox.templates.runtimes import runtime_of

ROOT = Path("/var/tmp/fragments/templates/x")


def test_every_template_has_one_build_recipe_matching_its_language() -> None:
    assert set(BUILDABLE) | NODE_TEMPLATES == set(TEMPLATES)
    assert not set(BUILDABLE) & NODE_TEMPLATES
    for template in TEMPLATES.values():
        assert runtime_of(template).build == template.language
        assert is_buildable(template) == (template.language == "python")
        if runtime_of(template).build == "python":
            assert runtime_of(template).build_check  # a build is checked before it is marked


def test_web_templates_have_a_server_and_interpreters_a_warm_up() -> None:
    for template in TEMPLATES.values():
        env = TemplateEnv(template, ROOT)
        if template.runtime == "web":
            command = server_command(env, template.file, template.port or 0)
            assert str(template.port) in command
            assert not runtime_of(template).warm_up
        else:
            assert not runtime_of(template).server
            assert runtime_of(template).warm_up


def test_python_dev_servers_start_through_a_boot_script_the_backend_writes() -> None:
    for template in TEMPLATES.values():
        boot = runtime_of(template).boot_script
        if template.runtime == "web" and template.language == "python":
            assert boot in SOURCES
            command = server_command(TemplateEnv(template, ROOT), "app.py", 8501)
            assert command[:2] == [f"{ROOT}/bin/python", f"{BOOT_DIR}/{boot}"]
        else:
            assert boot is None


def test_the_streamlit_command_line() -> None:
    env = TemplateEnv(TEMPLATES["streamlit-developer"], ROOT)
    assert server_command(env, "app.py", 8501) == [
        f"{ROOT}/bin/python",
        f"{BOOT_DIR}/streamlit_boot.py",
        "run",
        "app.py",
        "--server.port",
        "8501",
        "--server.address",
        "127.0.0.1",
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        "--server.enableCORS",
        "false",
        "--server.enableXsrfProtection",
        "false",
        "--server.runOnSave",
        "true",
        "--global.developmentMode",
        "false",
    ]


def test_the_gradio_command_line_and_placeholder() -> None:
    template = TEMPLATES["gradio-developer"]
    env = TemplateEnv(template, ROOT)
    assert server_command(env, "app.py", 7860) == [
        f"{ROOT}/bin/python",
        f"{BOOT_DIR}/gradio_boot.py",
        "app.py",
        "7860",
    ]
    placeholder = runtime_of(template).placeholder
    assert placeholder is not None
    compile(placeholder, "app.py", "exec")  # a Python app the reload mode swaps out
    assert "demo" in placeholder
    assert runtime_of(template).waits_for_reload
