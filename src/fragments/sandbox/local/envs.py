"""Template environments for local sandboxes: found where they were built, or built once (a
Python environment or a Node scaffold, as the template's runtime says), one build at a time."""

from __future__ import annotations

import asyncio

import structlog

from fragments.config import Settings
from fragments.sandbox.local.build import (
    Progress,
    TemplateBuildError,
    TemplateEnv,
    build_template,
    find_env,
    is_buildable,
    node_group,
)
from fragments.sandbox.local.node_build import build_node_template, node_template_dir
from fragments.sandbox.service import PhaseCallback, SandboxUnavailable
from fragments.sandbox.templates import Template
from fragments.sandbox.templates.runtimes import runtime_of

log = structlog.get_logger(__name__)


def runnable(template: Template) -> bool:
    """True when local sandboxes can build (and so run) this template."""
    return is_buildable(template) or runtime_of(template).build == "node"


class TemplateEnvs:
    """Finds and builds template environments (see the module docstring)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._build_lock = asyncio.Lock()

    @property
    def node_gid(self) -> int:
        return node_group(self.settings)

    def find(self, template: Template) -> TemplateEnv | None:
        if runtime_of(template).build == "node":
            path = node_template_dir(self.settings, template.id, gid=self.node_gid)
            return None if path is None else TemplateEnv(template, path)
        return find_env(self.settings, template)

    def build(
        self, template: Template, *, force: bool = False, progress: Progress | None = None
    ) -> TemplateEnv:
        """Build the template's environment (blocking: call it in a thread) unless a complete
        one exists or `force`; `progress` hears each step."""
        if runtime_of(template).build == "node":
            path = build_node_template(
                self.settings,
                template.id,
                progress,
                gid=self.node_gid,
                group_writable=True,
                force=force,
            )
            return TemplateEnv(template, path)
        return build_template(self.settings, template.id, force=force, progress=progress)

    async def build_now(
        self, template: Template, *, force: bool = False, progress: Progress | None = None
    ) -> tuple[TemplateEnv, bool]:
        """Build the template's environment now, one build at a time (a node's `build` job):
        (the environment, whether it was built rather than found). TemplateBuildError when
        it cannot be built."""
        async with self._build_lock:
            env = self.find(template)
            if env is not None and not force:
                return env, False
            log.info("sandbox_template_build", template=template.id, force=force)
            built = await asyncio.to_thread(self.build, template, force=force, progress=progress)
            return built, True

    async def ensure(self, template: Template, phase: PhaseCallback) -> TemplateEnv:
        """The template's environment, built first (phase "installing") when missing."""
        env = self.find(template)
        if env is not None:
            return env
        async with self._build_lock:
            env = self.find(template)
            if env is not None:
                return env
            await phase("installing")
            log.info("sandbox_template_build", template=template.id)
            try:
                return await asyncio.to_thread(self.build, template)
            except TemplateBuildError as exc:
                raise SandboxUnavailable(
                    f"The {template.id} sandbox environment could not be built: {exc}"
                ) from exc
