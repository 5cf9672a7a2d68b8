"""The app with one extra route that fails unexpectedly, served in its own process (Sentry's
SDK is process-wide): `python -m tests.observability.boom_app PORT`, settings from the
environment as in production."""

from __future__ import annotations

import sys

import uvicorn

from fragments.app import create_app


class DatabaseExploded(RuntimeError):
    """An error no handler expects."""


def main() -> None:
    app = create_app()

    @app.post("/api/boom")
    async def boom() -> None:
        raise DatabaseExploded("the database exploded")

    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")


if __name__ == "__main__":
    main()
