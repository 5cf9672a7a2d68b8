"""Versions (list, undo, restore), data-file uploads and the ZIP download, scoped to the caller:
bad input gets a clear JSON error and loses nothing; another tenant's ids are 404."""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import httpx
import pytest

from tests.accounts import Account, sign_up

pytestmark = pytest.mark.anyio

CSV = b"city,sales\nParis,120\nLyon,80\nNice,45\n"


def fragment(n: int, **extra: Any) -> dict[str, Any]:
    return {
        "commentary": f"Version {n}",
        "template": "code-interpreter-v1",
        "title": f"Chart {n}",
        "description": "A chart.",
        "additional_dependencies": [],
        "has_additional_dependencies": False,
        "install_dependencies_command": "",
        "port": None,
        "file_path": "script.py",
        "code": f"print({n})\n",
        **extra,
    }


async def conversation(api: httpx.AsyncClient, who: Account) -> str:
    response = await api.post("/api/conversations", json={"title": "w"}, headers=who.headers)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def turn(api: httpx.AsyncClient, who: Account, cid: str, n: int) -> str:
    """A stored exchange (as the re-send route stores one): its fragment id."""
    response = await api.post(
        f"/api/conversations/{cid}/turns",
        json={
            "turn_id": f"t{n}",
            "message": {"role": "user", "content": [{"type": "text", "text": f"ask {n}"}]},
            "fragment": fragment(n),
        },
        headers=who.headers,
    )
    assert response.status_code == 200, response.text
    return str(response.json()["fragment_id"])


def error_of(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"error", "detail"}, body
    assert isinstance(body["detail"], str), body
    if code is not None:
        assert body["error"] == code, body
    return body


async def test_undo_and_restore_keep_every_version(api: httpx.AsyncClient) -> None:
    alice = await sign_up(api, "alice")
    cid = await conversation(api, alice)
    ids = [await turn(api, alice, cid, n) for n in (1, 2, 3)]
    listed = (await api.get(f"/api/conversations/{cid}/versions", headers=alice.headers)).json()
    assert [v["version"] for v in listed["items"]] == [1, 2, 3]
    assert listed["current"] == ids[2]

    # A stale undo (not the last answer) changes nothing.
    stale = await api.post(
        f"/api/conversations/{cid}/undo", json={"fragment_id": ids[0]}, headers=alice.headers
    )
    error_of(stale, 409, "stale_undo")
    undone = await api.post(
        f"/api/conversations/{cid}/undo", json={"fragment_id": ids[2]}, headers=alice.headers
    )
    assert undone.status_code == 200, undone.text
    assert undone.json() == {
        "removed_messages": 2,
        "removed_fragment_id": ids[2],
        "current": ids[1],
    }
    detail = (await api.get(f"/api/conversations/{cid}", headers=alice.headers)).json()
    assert [m["content"][0]["text"] for m in detail["messages"] if m["role"] == "user"] == [
        "ask 1",
        "ask 2",
    ]
    listed = (await api.get(f"/api/conversations/{cid}/versions", headers=alice.headers)).json()
    assert [(v["version"], v["in_chat"]) for v in listed["items"]] == [
        (1, True),
        (2, True),
        (3, False),
    ]

    # Restoring version 1 adds version 4, a copy of it; nothing is overwritten.
    restored = await api.post(
        f"/api/conversations/{cid}/versions/{ids[0]}/restore", headers=alice.headers
    )
    assert restored.status_code == 201, restored.text
    body = restored.json()
    assert (body["version"], body["restored_from"]) == (4, 1)
    assert body["fragment"]["code"] == "print(1)\n"
    listed = (await api.get(f"/api/conversations/{cid}/versions", headers=alice.headers)).json()
    assert listed["current"] == body["fragment_id"]
    last = listed["items"][-1]
    assert (last["source"], last["restored_from"], last["current"]) == ("restore", 1, True)
    detail = (await api.get(f"/api/conversations/{cid}", headers=alice.headers)).json()
    assert detail["messages"][-1]["object"]["code"] == "print(1)\n"
    assert detail["messages"][-2]["content"][0]["text"].startswith("Restore version 1")
    # An undone version can be restored too.
    again = await api.post(
        f"/api/conversations/{cid}/versions/{ids[2]}/restore", headers=alice.headers
    )
    assert again.json()["fragment"]["code"] == "print(3)\n"

    # Undo down to nothing, then one more: a clear 409.
    for _ in range(4):
        assert (
            await api.post(f"/api/conversations/{cid}/undo", headers=alice.headers)
        ).status_code == 200
    error_of(
        await api.post(f"/api/conversations/{cid}/undo", headers=alice.headers),
        409,
        "nothing_to_undo",
    )
    listed = (await api.get(f"/api/conversations/{cid}/versions", headers=alice.headers)).json()
    assert len(listed["items"]) == 5
    assert listed["current"] is None


async def test_another_tenants_versions_files_and_zips_are_404(api: httpx.AsyncClient) -> None:
    alice = await sign_up(api, "alice")
    mallory = await sign_up(api, "mallory")
    cid = await conversation(api, alice)
    fid = await turn(api, alice, cid, 1)
    upload = await api.post(
        f"/api/conversations/{cid}/files?name=sales.csv", content=CSV, headers=alice.headers
    )
    assert upload.status_code == 201, upload.text
    mine = await conversation(api, mallory)
    mine_fid = await turn(api, mallory, mine, 1)
    attempts = [
        ("GET", f"/api/conversations/{cid}/versions"),
        ("POST", f"/api/conversations/{cid}/undo"),
        ("POST", f"/api/conversations/{cid}/versions/{fid}/restore"),
        # Alice's version through Mallory's own conversation: still not hers.
        ("POST", f"/api/conversations/{mine}/versions/{fid}/restore"),
        ("GET", f"/api/conversations/{mine}/versions/{fid}/download"),
        ("GET", f"/api/conversations/{cid}/versions/{fid}/download"),
        ("GET", f"/api/conversations/{cid}/files"),
        ("POST", f"/api/conversations/{cid}/files?name=x.csv"),
        ("DELETE", f"/api/conversations/{cid}/files/sales.csv"),
    ]
    for method, url in attempts:
        content = CSV if "/files" in url else None
        response = await api.request(method, url, content=content, headers=mallory.headers)
        error_of(response, 404, "not_found")
    assert mine_fid
    # Nothing of Alice's changed.
    listed = (await api.get(f"/api/conversations/{cid}/versions", headers=alice.headers)).json()
    assert [v["id"] for v in listed["items"]] == [fid]
    files = (await api.get(f"/api/conversations/{cid}/files", headers=alice.headers)).json()
    assert [f["name"] for f in files["items"]] == ["sales.csv"]


async def test_uploads_refuse_bad_input_and_lose_nothing(api: httpx.AsyncClient) -> None:
    alice = await sign_up(api, "alice")
    cid = await conversation(api, alice)
    url = f"/api/conversations/{cid}/files"

    async def put(name: str, data: bytes) -> httpx.Response:
        return await api.post(url, params={"name": name}, content=data, headers=alice.headers)

    ok = await put("sales.csv", CSV)
    assert ok.status_code == 201, ok.text
    assert ok.json()["kind"] == "csv"
    assert ok.json()["preview"].splitlines()[:2] == ["city,sales", "Paris,120"]

    for name in ("../etc/passwd.csv", "a/b.csv", "..\\x.csv", "..", "/abs.csv"):
        error_of(await put(name, CSV), 400, "invalid_name")
    error_of(await put("", CSV), 400, "invalid_name")
    error_of(await put("evil.exe", b"MZ..."), 415, "unsupported_file_type")
    error_of(await put("fake.xlsx", b"not a zip"), 415, "unsupported_file_type")
    error_of(await put("fake.parquet", b"hello"), 415, "unsupported_file_type")
    error_of(await put("bad.json", b"{not json"), 415, "unsupported_file_type")
    error_of(await put("binary.csv", b"\xff\xfe\x00\x01"), 415, "unsupported_file_type")
    error_of(await put("empty.csv", b""), 400, "empty_file")
    big = b"x," * (10 * 1024 * 1024 // 2 + 1)
    error_of(await put("big.csv", big), 413, "file_too_large")

    # Odd but harmless names are sanitised, not refused.
    odd = await put("my sales (2024).csv", CSV)
    assert odd.status_code == 201, odd.text
    assert odd.json()["name"] == "my_sales_2024_.csv"
    hidden = await put(".env.csv", CSV)
    assert hidden.json()["name"] == "env.csv"

    # The count limit: 10 files; replacing a name does not count.
    for n in range(7):
        assert (await put(f"f{n}.json", json.dumps({"n": n}).encode())).status_code == 201
    error_of(await put("one-too-many.txt", b"hello\n"), 400, "too_many_files")
    replaced = await put("sales.csv", b"city,sales\nRome,1\n")
    assert replaced.status_code == 201

    listed = (await api.get(url, headers=alice.headers)).json()
    names = [f["name"] for f in listed["items"]]
    assert len(names) == 10
    assert "one-too-many.txt" not in names
    assert "big.csv" not in names
    assert listed["max_files"] == 10
    deleted = await api.delete(f"{url}/f0.json", headers=alice.headers)
    assert deleted.status_code == 204
    error_of(await api.delete(f"{url}/f0.json", headers=alice.headers), 404, "not_found")


async def test_the_zip_holds_the_fragment_its_manifest_data_and_a_readme(
    api: httpx.AsyncClient,
) -> None:
    alice = await sign_up(api, "alice")
    cid = await conversation(api, alice)
    fid = await turn(api, alice, cid, 1)
    await api.post(
        f"/api/conversations/{cid}/files?name=sales.csv", content=CSV, headers=alice.headers
    )
    response = await api.get(
        f"/api/conversations/{cid}/versions/{fid}/download", headers=alice.headers
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    assert 'filename="chart-1-v1.zip"' in response.headers["content-disposition"]
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    assert sorted(archive.namelist()) == ["README.md", "requirements.txt", "sales.csv", "script.py"]
    assert archive.read("script.py") == b"print(1)\n"
    assert archive.read("sales.csv") == CSV
    assert "pandas" in archive.read("requirements.txt").decode().split()
    assert "python script.py" in archive.read("README.md").decode()
    error_of(
        await api.get(
            f"/api/conversations/{cid}/versions/{'0' * 32}/download", headers=alice.headers
        ),
        404,
    )


async def test_export_of_an_unsaved_fragment(api: httpx.AsyncClient) -> None:
    next_app = {
        **fragment(1),
        "template": "nextjs-developer",
        "port": 3000,
        "file_path": "pages/index.tsx",
        "code": "export default function Home() { return <p>hi</p> }\n",
        "additional_dependencies": ["recharts", "@tanstack/react-query@5"],
    }
    response = await api.post("/api/export", json={"fragment": next_app})
    assert response.status_code == 200, response.text
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    names = set(archive.namelist())
    assert {"package.json", "pages/index.tsx", "README.md", "tsconfig.json"} <= names
    manifest = json.loads(archive.read("package.json"))
    assert manifest["dependencies"]["recharts"] == "latest"
    assert manifest["dependencies"]["@tanstack/react-query"] == "5"
    assert "next" in manifest["dependencies"]
    assert archive.read("pages/index.tsx").decode() == next_app["code"]
    assert "npm install" in archive.read("README.md").decode()
    # A fragment whose path leaves the folder is refused, as everywhere.
    bad = await api.post(
        "/api/export", json={"fragment": {**fragment(1), "file_path": "../../etc/cron.d/x"}}
    )
    error_of(bad, 400, "invalid_path")
