"""Production refuses predictable secrets by a strength estimate, not only by length (C2, C4), and
names every offending setting at once, whatever phase found it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from garrison.config import SECRET_SETTINGS, load_settings
from garrison.config.checks import secret_problem
from garrison.errors import ConfigError
from garrison.keys.sealing import new_secret
from tests.support import base_env, run_cli

PG = "postgresql://app@db.internal:5432/garrison?sslmode=verify-full"

#: Long enough, varied enough for a character-entropy bar, and guessable all the same.
PREDICTABLE = [
    "0123456789abcdef0123456789abcdef",
    "MySuperSecretKeyForGarrison2024!",
    "Garrison-Production-Session-Key-2024",
    "ThisIsMyVeryLongAndSecurePassword123",
    "qwertyuiopasdfghjklzxcvbnm1234567890",
    "abcdefghijklmnopqrstuvwxyz012345",
    "passwordpasswordpasswordpassword1",
]


def prod(**extra: str) -> dict[str, str]:
    env = {"GARRISON_ENV": "production", "DATABASE_URL": PG}
    env.update({name: new_secret() for name in SECRET_SETTINGS})
    env.update(extra)
    return env


@pytest.mark.req("C2")
@pytest.mark.parametrize("value", PREDICTABLE)
def test_predictable_secrets_of_32_bytes_and_more_are_refused(value: str) -> None:
    assert len(value.encode()) >= 32
    problem = secret_problem("SECRET_ENCRYPTION_KEY", value)
    assert problem is not None
    assert problem.startswith("SECRET_ENCRYPTION_KEY:")
    assert value not in problem  # the refusal names the setting, never echoes the value
    with pytest.raises(ConfigError) as caught:
        load_settings(prod(SECRET_ENCRYPTION_KEY=value))
    assert [p.split(":")[0] for p in caught.value.problems] == ["SECRET_ENCRYPTION_KEY"]


@pytest.mark.req("C2", "C4")
def test_generated_secrets_always_pass() -> None:
    for _ in range(100):
        value = new_secret()
        assert secret_problem("GARRISON_KEYRING_KEY", value) is None, value


@pytest.mark.req("C2")
@pytest.mark.parametrize("nbytes", [32, 48])
def test_random_hex_and_base64_from_openssl_pass(nbytes: int) -> None:
    import base64
    import secrets

    for _ in range(25):
        raw = secrets.token_bytes(nbytes)
        for value in (raw.hex(), base64.b64encode(raw).decode()):
            if len(value) >= 32:
                assert secret_problem("SECRET_ENCRYPTION_KEY", value) is None, value


@pytest.mark.req("C2", "C4")
def test_the_backup_key_is_checked_like_the_other_secrets() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(prod(GARRISON_BACKUP_KEY="MySuperSecretKeyForGarrison2024!"))
    assert [p.split(":")[0] for p in caught.value.problems] == ["GARRISON_BACKUP_KEY"]
    with pytest.raises(ConfigError, match="GARRISON_BACKUP_KEY"):
        load_settings(prod(GARRISON_BACKUP_KEY="changeme"))
    assert load_settings(prod(GARRISON_BACKUP_KEY=new_secret())).backup_key is not None


@pytest.mark.req("C4")
def test_secrets_generate_covers_the_backup_key(tmp_path: Path) -> None:
    done = run_cli("secrets", "generate", "--json", env=base_env(tmp_path))
    assert done.returncode == 0, done.stderr
    values = json.loads(done.stdout)
    assert "GARRISON_BACKUP_KEY" in values
    assert set(SECRET_SETTINGS) < set(values)
    assert len(set(values.values())) == len(values)
    assert load_settings(prod(**values)).production


def _many_bad(tmp_path: Path) -> dict[str, str]:
    """Several bad settings of different kinds: each would stop a start on its own."""
    env = prod(
        GARRISON_ACCESS_TTL="soon",  # type error
        GARRISON_SIGNING_ALG="HS256",  # not an allowed value
        SECRET_ENCRYPTION_KEY="MySuperSecretKeyForGarrison2024!",  # predictable
        GARRISON_BACKUP_KEY="changeme",  # a known default
        GARRISON_CORS_ORIGINS="*",  # production-only refusal
    )
    del env["GARRISON_KEYRING_KEY"]
    env["GARRISON_KEYRING_KEY_FILE"] = str(tmp_path / "no-such-file")  # unreadable
    del env["GARRISON_SESSION_SECRET"]  # missing
    env["DATABASE_URL"] = "sqlite:///garrison.db"  # production needs PostgreSQL
    return env


EXPECTED = {
    "GARRISON_ACCESS_TTL",
    "GARRISON_SIGNING_ALG",
    "SECRET_ENCRYPTION_KEY",
    "GARRISON_BACKUP_KEY",
    "GARRISON_CORS_ORIGINS",
    "GARRISON_KEYRING_KEY_FILE",
    "GARRISON_SESSION_SECRET",
    "DATABASE_URL",
}


@pytest.mark.req("C2", "C3")
def test_a_refusal_names_every_offending_setting_across_phases(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(_many_bad(tmp_path))
    named = [p.split(":")[0] for p in caught.value.problems]
    assert set(named) == EXPECTED, caught.value.problems
    assert len(named) == len(set(named)), caught.value.problems  # each once
    assert "GARRISON_KEYRING_KEY" not in named  # its _FILE problem already says it


@pytest.mark.slow
@pytest.mark.req("C2", "C3")
def test_serve_lists_every_offending_setting_across_phases(tmp_path: Path) -> None:
    env = base_env(tmp_path / "data", **_many_bad(tmp_path))
    done = run_cli("serve", "--port", "1", env=env)
    assert done.returncode == 1
    assert "Traceback" not in done.stdout + done.stderr
    for name in EXPECTED:
        assert name in done.stderr, (name, done.stderr)
    assert "MySuperSecretKeyForGarrison2024!" not in done.stderr
