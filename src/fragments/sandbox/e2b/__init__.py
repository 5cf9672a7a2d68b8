"""The E2B backend: sandboxes in E2B's cloud through the `e2b-code-interpreter` SDK."""

from fragments.sandbox.e2b.service import E2BSandboxService

__all__ = ["E2BSandboxService"]
