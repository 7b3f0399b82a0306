"""A writable copy of the packaged policy set, and an Authorizer on it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from garrison.policy import Authorizer
from garrison.policy.engine import DEFAULTS_DIR
from garrison.policy.registry import DEFAULT_REGISTRY, load_registry_file


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    """A deployment's policy directory: the packaged decision tables, no policies of its own
    (Garrison's base policies and schema always come from the package)."""
    target = tmp_path / "policies"
    shutil.copytree(DEFAULTS_DIR / "tests", target / "tests")
    return target


@pytest.fixture
def authorizer(policy_dir: Path) -> Authorizer:
    return Authorizer(load_registry_file(DEFAULT_REGISTRY), policy_dir)
