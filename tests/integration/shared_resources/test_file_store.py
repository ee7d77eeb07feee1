"""The file store: a tenant's uploaded files are bounded by its quota file_bytes, so
one tenant cannot fill the store that every tenant's uploads and batches' output
files are written to."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from testing.openai_sdk import chat_line, jsonl
from tests.conftest import StackFactory

pytestmark = pytest.mark.integration

TENANTS = """
tenants:
  - name: alpha
    keys: ["key-alpha"]
  - name: beta
    keys: ["key-beta"]
    quotas:
      file_bytes: 3000
"""
CONTENT = jsonl([chat_line(f"line-{n}", "x" * 13) for n in range(6)])  # about 1,000 bytes


def upload(url: str, key: str) -> httpx.Response:
    return httpx.post(f"{url}/v1/files", files={"file": ("in.jsonl", CONTENT)}, data={"purpose": "batch"},
                      headers={"Authorization": f"Bearer {key}"}, timeout=30)  # fmt: skip


def test_hostile_tenant_beside_normal_keeps_no_more_files_than_its_quota(
    make_stack: StackFactory, broker_env: dict[str, str], tmp_path: Path
) -> None:
    if not broker_env["RABBIT_MQ_HOST"]:
        pytest.skip("once is enough: files are the file store's, not the broker's")
    keys = tmp_path / "tenants.yaml"
    keys.write_text(TENANTS)
    stack = make_stack(API_KEYS_FILE=str(keys))
    assert 900 < len(CONTENT) <= 1000
    kept = [upload(stack.url, "key-beta") for _ in range(3)]
    assert [answer.status_code for answer in kept] == [200] * 3, [answer.text for answer in kept]
    refused = upload(stack.url, "key-beta")
    assert refused.status_code == 429, refused.text
    message = refused.json()["error"]["message"]
    assert message.startswith("quota file_bytes: tenant 'beta' keeps ") and "at most 3000" in message, message
    # Alpha's uploads are its own, whatever beta keeps.
    assert [upload(stack.url, "key-alpha").status_code for _ in range(4)] == [200] * 4
    # A file deleted gives its bytes back.
    gone = httpx.delete(f"{stack.url}/v1/files/{kept[0].json()['id']}", headers={"Authorization": "Bearer key-beta"})
    assert gone.status_code == 200
    assert upload(stack.url, "key-beta").status_code == 200
