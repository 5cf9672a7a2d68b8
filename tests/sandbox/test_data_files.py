"""A conversation's data files in the real local sandbox: written into the working folder
before the cell runs (bytes exactly, binary too), readable by relative path, written once per
sandbox, and copied into a new sandbox when the old one is gone."""

from __future__ import annotations

import pytest

from fragments.sandbox.local.service import LocalSandboxService
from fragments.schemas import InterpreterResult
from tests.sandbox.conftest import fragment

pytestmark = pytest.mark.anyio

CSV = b"city,sales\nParis,120\nLyon,80\n"
BINARY = bytes(range(256)) * 4
DATA = (("sales.csv", CSV), ("blob.parquet", BINARY))
READ = (
    "import hashlib, pandas as pd\n"
    "print(pd.read_csv('sales.csv')['sales'].sum())\n"
    "print(hashlib.sha256(open('blob.parquet', 'rb').read()).hexdigest())\n"
)


async def test_data_files_are_in_the_working_folder_of_every_sandbox(
    service: LocalSandboxService,
) -> None:
    import hashlib

    digest = hashlib.sha256(BINARY).hexdigest()
    first = await service.execute(fragment(READ), owner="conv-data", data_files=DATA)
    assert isinstance(first, InterpreterResult)
    assert first.error is None, first.error
    assert "".join(first.stdout).split() == ["200", digest]

    # The same sandbox: written once (the code deleting it shows no second copy was made).
    await service.execute(fragment("import os; os.remove('sales.csv')"), owner="conv-data")
    again = await service.execute(
        fragment("import os; print(os.path.exists('sales.csv'))"),
        owner="conv-data",
        data_files=DATA,
    )
    assert isinstance(again, InterpreterResult)
    assert again.stdout == ["False\n"]

    # A new sandbox (the old one gone): the files are copied in again.
    fresh = await service.execute(fragment(READ), owner="conv-data", restart=True, data_files=DATA)
    assert isinstance(fresh, InterpreterResult)
    assert fresh.sandbox_id != first.sandbox_id
    assert fresh.error is None, fresh.error
    assert "".join(fresh.stdout).split() == ["200", digest]
