"""Nothing in the domain reads the environment (C1, issue 8): the entry points read it once.

Settings are loaded from the environment the entry point hands over (``load_settings(os.environ)``
in ``garrison serve`` and the CLI) and secrets named indirectly (an OIDC ``client_secret_env``, an
IdP's ``hs256_secret_env``) are resolved by the composition root; the domain gets frozen values.
The domain packages are the ``source_modules`` of the "domain never imports" import-linter
contract, so a package added there is scanned here too.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
SRC = REPO / "src"
_READERS = frozenset({"environ", "environb", "getenv", "getenvb", "putenv", "unsetenv"})


def domain_modules() -> list[str]:
    data = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    for contract in data["tool"]["importlinter"]["contracts"]:
        if contract["name"].startswith("The domain never imports"):
            return list(contract["source_modules"])
    raise AssertionError("no 'The domain never imports' contract in pyproject.toml")


def domain_files() -> list[Path]:
    files: list[Path] = []
    for module in domain_modules():
        base = SRC / Path(*module.split("."))
        if base.is_dir():
            files.extend(sorted(base.rglob("*.py")))
        else:
            files.append(base.with_suffix(".py"))
    return files


def environ_reads(source: str) -> list[int]:
    """Lines of ``source`` that touch the process environment through ``os``: ``os.environ``,
    ``os.getenv`` (under any alias of ``os``) or ``from os import environ``. Mentions in strings
    and comments are not reads."""
    tree = ast.parse(source)
    aliases = {"os"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            aliases |= {a.asname or a.name for a in node.names if a.name == "os"}
    hits: list[int] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "os":
            if any(a.name in _READERS or a.name == "*" for a in node.names):
                hits.append(node.lineno)
        elif (
            isinstance(node, ast.Attribute)
            and node.attr in _READERS
            and isinstance(node.value, ast.Name)
            and node.value.id in aliases
        ):
            hits.append(node.lineno)
    return sorted(hits)


@pytest.mark.req("C1")
def test_no_domain_module_reads_the_environment() -> None:
    files = domain_files()
    assert len(files) > 50, files  # the contract's list resolved to the real packages
    missing = [str(f) for f in files if not f.is_file()]
    assert not missing, missing
    found = [
        f"{path.relative_to(REPO)}:{line}"
        for path in files
        for line in environ_reads(path.read_text(encoding="utf-8"))
    ]
    assert not found, "the domain reads the environment at " + ", ".join(found)


@pytest.mark.req("C1")
@pytest.mark.parametrize(
    ("source", "lines"),
    [
        ("import os\nx = os.environ['A']\n", [2]),
        ("import os\nx = os.environ.get('A')\n", [2]),
        ("import os\nx = os.getenv('A')\n", [2]),
        ("import os as o\nx = o.environ\n", [2]),
        ("from os import environ\n", [1]),
        ("from os import getenv as g\n", [1]),
        ("from os import *\n", [1]),
        ("def f(env=None):\n    import os\n    return env or dict(os.environ)\n", [3]),
        ('"""Read os.environ?"""\n# os.getenv("A")\nimport os\nos.path.join("a")\n', []),
        ("environ = {}\nx = environ.get('A')\n", []),
    ],
)
def test_the_scan_sees_every_spelling(source: str, lines: list[int]) -> None:
    assert environ_reads(source) == lines
