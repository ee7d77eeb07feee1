"""The contract's Lua scripts, checked without Redis: what Redis refuses only as a script
runs, found in every branch before any runs. Redis runs scripts with no global
variables (a name neither local, a parameter nor Redis's own is an error there, as is
creating one), so a typo or a forgotten `local` fails a job only on the path that meets
it. What each script does is run on a real Redis in tests/integration/shared/test_contract.py
and tests/integration/tasks/test_servers.py; which keys and arguments each caller passes,
in the callers' unit tests (testing/scripted_redis.py's `arity`)."""

from __future__ import annotations

import re

import pytest

from shared.contract import scripts

pytestmark = pytest.mark.unit

SCRIPTS = {name: source for name, source in vars(scripts).items() if name.isupper() and isinstance(source, str)}

KEYWORDS = frozenset(
    {"and", "break", "do", "else", "elseif", "end", "false", "for", "function", "goto", "if", "in", "local", "nil",
     "not", "or", "repeat", "return", "then", "true", "until", "while"}
)  # fmt: skip
# What Redis's Lua gives a script.
PROVIDED = frozenset(
    {"KEYS", "ARGV", "redis", "cjson", "cmsgpack", "bit", "struct", "string", "table", "math", "tonumber", "tostring",
     "type", "pairs", "ipairs", "next", "select", "unpack", "error", "pcall", "assert", "setmetatable",
     "getmetatable", "rawget", "rawset"}
)  # fmt: skip
TOKEN = re.compile(r"[A-Za-z_]\w*|\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|==|~=|<=|>=|\.\.\.|\.\.|\S")


def _code(source: str) -> str:
    """The script without its comments and string literals."""
    source = re.sub(r"--[^\n]*", " ", source)
    return re.sub(r"'(?:[^'\\\n]|\\.)*'|\"(?:[^\"\\\n]|\\.)*\"", " '' ", source)


def undeclared(source: str) -> list[str]:
    """The names a script uses (or assigns) that are not local, a parameter, a loop's or
    Redis's own: globals, which Redis refuses. Scopes are taken loosely (a name declared
    anywhere before counts), so this finds no false ones."""
    tokens = TOKEN.findall(_code(source))
    declared: set[str] = set()
    found: list[str] = []
    braces = 0
    i = 0

    def names_from(j: int, stop: set[str]) -> int:
        while j < len(tokens) and tokens[j] not in stop:
            if re.fullmatch(r"[A-Za-z_]\w*", tokens[j]) and tokens[j] not in KEYWORDS:
                declared.add(tokens[j])
            j += 1
        return j

    while i < len(tokens):
        token = tokens[i]
        if token == "{":
            braces += 1
        elif token == "}":
            braces -= 1
        elif token == "local" and tokens[i + 1] != "function":
            while re.fullmatch(r"[A-Za-z_]\w*", tokens[i + 1]):  # local a, b, c
                declared.add(tokens[i + 1])
                i += 2 if tokens[i + 2 : i + 3] == [","] else 1
                if tokens[i] != ",":
                    break
        elif token == "function":
            j = i + 1
            if tokens[j] != "(":
                declared.add(tokens[j])
                j += 1
            i = names_from(j, {")"})
        elif token == "for":
            i = names_from(i + 1, {"in", "="})
        elif re.fullmatch(r"[A-Za-z_]\w*", token) and token not in KEYWORDS | PROVIDED:
            field = i > 0 and tokens[i - 1] in (".", ":")
            key = braces > 0 and i + 1 < len(tokens) and tokens[i + 1] == "="
            if not field and not key and token not in declared:
                found.append(token)
        i += 1
    return found


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_no_script_uses_or_makes_a_global(name: str) -> None:
    assert undeclared(SCRIPTS[name]) == []


def test_the_check_finds_a_forgotten_local_and_a_misspelt_name() -> None:
    forgotten = "local n = redis.call('INCR', KEYS[1])\ncount = n + 1\nreturn count"
    misspelt = "local function f(a) return a end\nlocal x = f(1)\nreturn {y = x, z = xx}"
    assert undeclared(forgotten) == ["count", "count"]
    assert undeclared(misspelt) == ["xx"]
    assert undeclared("for i, v in ipairs(KEYS) do redis.call('DEL', v, i) end") == []


@pytest.mark.parametrize("name", sorted(name for name in SCRIPTS if not name.startswith("_")))
def test_each_scripts_keys_are_numbered_without_a_gap(name: str) -> None:
    # A key the caller passes that the script never reads means the two count them differently.
    used = sorted({int(n) for n in re.findall(r"KEYS\[(\d+)\]", SCRIPTS[name])})
    assert used == list(range(1, len(used) + 1))


def test_the_modules_account_names_every_script() -> None:
    assert scripts.__doc__ is not None
    listed = set(re.findall(r"\b[A-Z][A-Z_]+[A-Z]\b", scripts.__doc__))
    assert {name for name in SCRIPTS if not name.startswith("_")} <= listed
