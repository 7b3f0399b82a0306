"""The layer contract is held by a tool (issue 8): import-linter fails on a forbidden import."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(Path(sys.executable).parent / "lint-imports"),
            "--no-cache",
            "--config",
            "pyproject.toml",
        ],
        cwd=root,
        env={"PYTHONPATH": str(root / "src"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "src", tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


@pytest.mark.req("Z2")
def test_the_shipped_tree_keeps_every_contract(tree: Path) -> None:
    done = _lint(tree)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


@pytest.mark.req("Z2")
@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("policy/engine.py", "import garrison.gateway.asgi", "The domain never imports"),
        ("identity/users.py", "import starlette.requests", "The domain never imports"),
        ("admission/pipeline.py", "import garrison.usecases", "Entry points, composition root"),
        ("gateway/routes/admin.py", "import garrison.privacy", "act through the use cases"),
        ("ratelimit/rules.py", "from garrison.config import Settings", "never reads the Settings"),
        ("vault/keys.py", "import garrison.config.settings", "never reads the Settings"),
        (
            "policy/model.py",
            "from garrison.config.loader import load_settings",
            "never reads the Settings",
        ),
    ],
)
def test_a_forbidden_import_breaks_the_build(
    tree: Path, module: str, line: str, contract: str
) -> None:
    path = tree / "src" / "garrison" / module
    path.write_text(path.read_text() + f"\n{line}  # noqa\n")
    done = _lint(tree)
    assert done.returncode == 1, done.stdout
    assert "BROKEN" in done.stdout
    summary = " ".join(done.stdout.split())
    assert contract in summary
    verdict = summary.split(contract, 1)[1]  # the first mention is the contract's summary line
    kept = verdict.find(" KEPT")
    assert -1 < verdict.find(" BROKEN") < (kept if kept != -1 else len(verdict)), done.stdout
