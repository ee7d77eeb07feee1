"""An embedding job's vectors as its result carries them: each one base64 of
little-endian float32 (a quarter of JSON's size). The worker packs them
(tasks/llm.py), the API unpacks them or passes them on as OpenAI's ``base64``."""

from __future__ import annotations

import base64
import sys
from array import array


def pack_vector(vector: list[float]) -> str:
    """`vector` as a result carries it."""
    packed = array("f", vector)
    if sys.byteorder == "big":
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode()


def unpack_vector(packed: str) -> list[float]:
    """The floats of a vector `pack_vector` made."""
    floats = array("f", base64.b64decode(packed))
    if sys.byteorder == "big":
        floats.byteswap()
    return floats.tolist()
