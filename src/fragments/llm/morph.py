"""Morph's fast apply: merges an edit snippet into the current code.

Morph speaks OpenAI chat completions (`POST {base}/chat/completions`, model `morph-v3-large`):
one user message `<instruction>…</instruction><code>…</code><update>…</update>`, and the
answer's content is the whole merged file. The OpenAI SDK makes the call (no SDK retries:
the edit service falls back to a local apply instead of waiting), so what runs against the fake
Morph in the tests is the code that runs against Morph.
"""

from __future__ import annotations

from dataclasses import dataclass

import openai
from openai import AsyncOpenAI

from fragments.config import Settings
from fragments.llm.pricing import cost_usd
from fragments.llm.types import Usage

# The circuit breaker in front of Morph, as `GET /api/status` and `/metrics` list it.
MORPH_BREAKER = "edit:morph"
# The provider label usage records carry for Morph's calls (`morph/morph-v3-large`).
MORPH_PROVIDER = "morph"


class MorphError(Exception):
    """Morph did not merge: unreachable, timed out, an error status, or an empty answer."""


@dataclass(frozen=True, slots=True)
class Merged:
    code: str
    usage: Usage
    cost_usd: float


def merge_prompt(instruction: str, code: str, update: str) -> str:
    """The one user message Morph's apply models take."""
    return (
        f"<instruction>{instruction}</instruction>\n<code>{code}</code>\n<update>{update}</update>"
    )


class MorphClient:
    """One client for the app's lifetime (its connection pool is reused between edits)."""

    def __init__(self, *, api_key: str, base_url: str, model: str, timeout: float) -> None:
        self.model = model
        self._client = AsyncOpenAI(
            api_key=api_key, base_url=base_url, timeout=timeout, max_retries=0
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> MorphClient | None:
        """The platform's Morph client; None when `MORPH_API_KEY` is not set (or empty, as
        deploy files leave it)."""
        key = settings.morph_api_key.get_secret_value() if settings.morph_api_key else ""
        if not key:
            return None
        return cls(
            api_key=key,
            base_url=settings.morph_base_url,
            model=settings.morph_model,
            timeout=settings.morph_timeout_seconds,
        )

    async def merge(self, *, instruction: str, code: str, update: str) -> Merged:
        """The merged code, or `MorphError`."""
        try:
            completion = await self._client.chat.completions.create(
                model=self.model,
                messages=[{"role": "user", "content": merge_prompt(instruction, code, update)}],
            )
        except openai.APIStatusError as exc:
            raise MorphError(f"Morph answered {exc.status_code}") from exc
        except openai.APIError as exc:  # connection failures, timeouts, malformed bodies
            raise MorphError(f"Morph failed: {type(exc).__name__}") from exc
        merged = completion.choices[0].message.content if completion.choices else None
        if not merged or not merged.strip():
            raise MorphError("Morph answered with no code")
        reported = completion.usage
        usage = Usage(
            input_tokens=reported.prompt_tokens if reported else 0,
            output_tokens=reported.completion_tokens if reported else len(merged) // 4,
            reported=reported is not None,
        )
        return Merged(_unfenced(merged), usage, cost_usd(self.model, usage))

    async def aclose(self) -> None:
        await self._client.close()


def _unfenced(text: str) -> str:
    """Morph answers with bare code; a Markdown fence around it, if any, is not the program's."""
    stripped = text.strip()
    if stripped.startswith("```") and stripped.endswith("```") and "\n" in stripped:
        return stripped.split("\n", 1)[1].rsplit("```", 1)[0].rstrip("\n") + "\n"
    return text
