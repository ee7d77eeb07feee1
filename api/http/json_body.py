"""Reading a JSON document the gateway can carry, or saying which field it cannot.

Python's ``json`` reads more than JSON: ``NaN`` and ``Infinity``, numbers that overflow
to infinity (``1e309``), lone UTF-16 surrogates (``"\\udfff"``, text no encoder
writes), and nesting as deep as the stack allows. Each would fail later, as a 500 or a
job that never runs (a key that cannot be encoded, a message that cannot be sent, a
validator that recurses too deep), so each is refused here with 422 naming the field:
for request bodies (api/http/route_class.py) and for every line of a batch's input file
(api/openai/batches/input.py) alike.

The usual body pays two scans of its bytes in C and a call per float; the walk over
the document runs only when one of them found something to look at.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from api.errors import InvalidJson

# A surrogate (U+D800..U+DFFF) written as an escape; a pair of them is one character,
# which the walk lets through.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abcdefABCDEF]")


class _NotFinite:
    """Stands for NaN, ±Infinity or a number out of a double's range while parsing."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


class _Reading:
    """One document's reading: a decoder whose number hooks note a non-finite number.
    Its own per call (a decoder costs microseconds to make): nothing is shared between
    the documents read at once, on the event loop or on a worker thread."""

    __slots__ = ("decoder", "odd")

    def __init__(self) -> None:
        self.odd = False  # whether the document holds a non-finite number
        self.decoder = json.JSONDecoder(parse_constant=self._not_finite, parse_float=self._number)

    def _not_finite(self, text: str) -> Any:
        self.odd = True
        return _NotFinite(text)

    def _number(self, text: str) -> Any:
        value = float(text)
        return value if math.isfinite(value) else self._not_finite(text)


def loads(raw: bytes | str, max_depth: int, where: str = "body") -> Any:
    """The document in `raw`; `InvalidJson` naming the field (under `where`) that holds a
    non-finite number or a lone surrogate, or that nests deeper than `max_depth`.
    Malformed JSON raises `json.JSONDecodeError`, as `json.loads`."""
    text = raw.decode(json.detect_encoding(raw), "surrogatepass") if isinstance(raw, bytes) else raw
    reading = _Reading()
    try:
        found = reading.decoder.decode(text)
    except RecursionError:
        named = where or "the document"
        raise InvalidJson(f"{named}: nested deeper than {max_depth} levels (MAX_JSON_DEPTH)") from None
    data = raw if isinstance(raw, bytes) else raw.encode("utf-8", "surrogatepass")
    # More brackets than levels allowed: the nesting may be too deep.
    deep = data.count(b"[") + data.count(b"{") > max_depth
    if reading.odd or deep or _SURROGATE_ESCAPE.search(data):
        problem = _problem(found, max_depth, where)
        if problem is not None:
            raise InvalidJson(problem)
    return found


def _problem(document: Any, max_depth: int, where: str) -> str | None:
    """What is wrong with the document, naming the first field found wrong; None: nothing."""
    stack: list[tuple[Any, str, int]] = [(document, where, 0)]
    while stack:
        value, path, depth = stack.pop()
        named = path or "the document"
        if isinstance(value, str):
            if _lone_surrogate(value):
                return f"{named}: holds a lone UTF-16 surrogate (as \\udfff), which is not text"
        elif isinstance(value, _NotFinite):
            return f"{named}: {value.text} is not a finite number"
        elif isinstance(value, dict | list):
            if depth >= max_depth:
                return f"{named}: nested deeper than {max_depth} levels (MAX_JSON_DEPTH)"
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                if isinstance(key, str) and _lone_surrogate(key):
                    return f"{named}: a key holds a lone UTF-16 surrogate (as \\udfff), which is not text"
                stack.append((item, f"{path}.{key}" if path else str(key), depth + 1))
    return None


def _lone_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def clean_text(text: str, where: str) -> str:
    """`text` when it can be encoded; `InvalidJson` naming `where` when it holds a lone surrogate."""
    if _lone_surrogate(text):
        raise InvalidJson(f"{where}: holds a lone UTF-16 surrogate (as \\udfff), which is not text")
    return text
