"""What a database outage looks like, and the one HTTP error it becomes."""

from __future__ import annotations

from sqlalchemy.exc import InterfaceError, OperationalError

from fragments.errors import FragmentsError

# What a database outage looks like from SQLAlchemy and the drivers underneath.
DB_DOWN = (OperationalError, InterfaceError, OSError, TimeoutError)


class DatabaseUnavailable(FragmentsError):
    status_code = 503
    code = "database_unavailable"

    def __init__(self) -> None:
        super().__init__(
            "The database is unreachable; please try again shortly.",
            headers={"Retry-After": "5"},
        )
