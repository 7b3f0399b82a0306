"""A writable copy of the packaged policy set, and an Authorizer on it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from garrison.policy import Authorizer
from garrison.policy.registry import DEFAULT_REGISTRY, DEFAULTS_DIR, load_registry_file


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    target = tmp_path / "policies"
    shutil.copytree(DEFAULTS_DIR, target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


@pytest.fixture
def authorizer(policy_dir: Path) -> Authorizer:
    return Authorizer(load_registry_file(DEFAULT_REGISTRY), policy_dir)
