"""The deploy files cannot rot: they parse, their references resolve, and every setting they set
is one the app has (config.py). No container engine or cluster runs here: `make lint` checks
them with hadolint, yamllint and the Kubernetes schemas; this checks what those cannot."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from fragments.cli import app as cli_app
from fragments.config import Settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
KUBERNETES = DEPLOY / "kubernetes"


# Settings of the fleet's job queue (`fragments node`), pinned for the fleet and added to
# config.py by that work; until both are merged these may be named before config.py has them.
def known_settings() -> set[str]:
    names: set[str] = set()
    for name, field in Settings.model_fields.items():
        names.add(f"FRAGMENTS_{name.upper()}")
        alias = field.validation_alias
        choices = getattr(alias, "choices", None)
        for choice in choices or ([alias] if isinstance(alias, str) else []):
            names.add(str(choice))
    return names


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return loaded


def manifests() -> list[tuple[Path, dict[str, Any]]]:
    docs = []
    for path in sorted(KUBERNETES.rglob("*.yaml")):
        if path.name != "kustomization.yaml":
            docs += [(path, d) for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def env_names_in_compose() -> set[str]:
    names: set[str] = set()
    for service in compose()["services"].values():
        names |= set((service.get("environment") or {}).keys())
    return names


def env_names_in_kubernetes() -> set[str]:
    names: set[str] = set()
    for _, doc in manifests():
        if doc["kind"] in ("ConfigMap", "Secret"):
            names |= set((doc.get("data") or doc.get("stringData") or {}).keys())
        text = yaml.safe_dump(doc)
        names |= set(re.findall(r"name: (FRAGMENTS_[A-Z0-9_]+)", text))
    return names


def app_settings(names: set[str]) -> set[str]:
    """The names meant for the app: FRAGMENTS_* and the providers' own."""
    return {n for n in names if n.startswith("FRAGMENTS_") or n.endswith(("_API_KEY", "_URL"))}


@pytest.mark.parametrize("where", ["compose", "kubernetes"])
def test_every_setting_named_exists_in_config(where: str) -> None:
    names = env_names_in_compose() if where == "compose" else env_names_in_kubernetes()
    named = app_settings(names) - {"POSTGRES_APP_PASSWORD"}
    assert named, "no setting found: the parser lost its way"
    unknown = named - known_settings()
    assert not unknown, f"{where} sets settings config.py does not have: {sorted(unknown)}"


def test_compose_has_the_fleet_and_its_references_resolve() -> None:
    spec = compose()
    services = spec["services"]
    for wanted in ("postgres", "redis", "migrate", "api-1", "api-2", "node-1", "node-2", "proxy"):
        assert wanted in services
    volumes = set(spec.get("volumes") or {})
    networks = set(spec.get("networks") or {})
    for name, service in services.items():
        for dependency in service.get("depends_on") or {}:
            assert dependency in services, f"{name} depends on unknown {dependency}"
        for mount in service.get("volumes") or []:
            source = mount.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in volumes, f"{name} mounts undeclared volume {source}"
        for network in service.get("networks") or []:
            assert network in networks
    # The API processes run no sandboxes; the nodes are told where they are reached.
    for api in ("api-1", "api-2"):
        assert services[api]["environment"]["FRAGMENTS_EMBEDDED_NODE"] == "false"
    for node in ("node-1", "node-2"):
        assert "SYS_ADMIN" in services[node]["cap_add"]
        assert services[node]["cap_drop"] == ["ALL"]
        assert not services[node].get("privileged")
    assert services["migrate"]["command"] == ["fragments", "db", "upgrade"]


def test_the_commands_the_files_run_exist() -> None:
    commands = {
        c.name or (c.callback.__name__ if c.callback else "") for c in cli_app.registered_commands
    }
    groups = {g.name for g in cli_app.registered_groups}
    texts = [(DEPLOY / "compose.yaml").read_text(), (DEPLOY / "Dockerfile").read_text()]
    texts += [p.read_text() for p in KUBERNETES.rglob("*.yaml")]
    used = set()
    for text in texts:
        used |= set(re.findall(r'"fragments",\s*"([a-z][a-z-]*)"', text))
        used |= set(re.findall(r"fragments ([a-z][a-z-]*) ", text))
    assert used >= {"serve", "db", "templates", "node"}
    unknown = used - commands - groups
    assert not unknown, f"unknown CLI commands: {sorted(unknown)}"


def test_kubernetes_layout_resolves_and_copies_agree() -> None:
    for kustomization in KUBERNETES.rglob("kustomization.yaml"):
        spec = yaml.safe_load(kustomization.read_text())
        for resource in spec["resources"]:
            assert (kustomization.parent / resource).exists(), resource
    docs = manifests()
    kinds = {(d["kind"], d["metadata"]["name"]) for _, d in docs}
    for wanted in (
        ("Deployment", "fragments-api"),
        ("HorizontalPodAutoscaler", "fragments-api"),
        ("PodDisruptionBudget", "fragments-api"),
        ("StatefulSet", "fragments-node"),
        ("Job", "fragments-migrate"),
        ("Deployment", "fragments-api-canary"),
    ):
        assert wanted in kinds
    api = next(
        d for _, d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "fragments-api"
    )
    container = api["spec"]["template"]["spec"]["containers"][0]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert api["spec"]["strategy"]["type"] == "RollingUpdate"
    # The namespaces' copies of the config and the secrets say the same.
    for kind in ("ConfigMap", "Secret"):
        copies = [d.get("data") or d.get("stringData") for _, d in docs if d["kind"] == kind]
        assert len(copies) == 2
        assert copies[0] == copies[1]
