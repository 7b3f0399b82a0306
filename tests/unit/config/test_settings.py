"""Settings: sources, precedence, and production's refusal to start on weak config (C1-C4)."""

from __future__ import annotations

from pathlib import Path

import pytest

from garrison.config import GENERATED_SECRETS, SECRET_SETTINGS, load_settings
from garrison.config.checks import secret_problem
from garrison.errors import ConfigError
from tests.support import base_env, run_cli

STRONG = {name: f"{name}-Xq8vN2pLr7sT0wYb4cJ9mF3hK6gD1eA5" for name in SECRET_SETTINGS}
PG = "postgresql://app@db.internal:5432/garrison?sslmode=verify-full"


def prod(**extra: str) -> dict[str, str]:
    return {"GARRISON_ENV": "production", "DATABASE_URL": PG, **STRONG, **extra}


@pytest.mark.req("C1")
def test_file_variant_reads_the_secret_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "keyring"
    secret.write_text(STRONG["GARRISON_KEYRING_KEY"] + "\n")
    env = prod()
    del env["GARRISON_KEYRING_KEY"]
    env["GARRISON_KEYRING_KEY_FILE"] = str(secret)
    settings = load_settings(env)
    assert settings.keyring_key is not None
    assert settings.keyring_key.get_secret_value() == STRONG["GARRISON_KEYRING_KEY"]


@pytest.mark.req("C1")
def test_value_and_file_variant_together_is_refused(tmp_path: Path) -> None:
    (tmp_path / "k").write_text("x")
    with pytest.raises(ConfigError, match="GARRISON_KEYRING_KEY"):
        load_settings(
            {"GARRISON_KEYRING_KEY": "a", "GARRISON_KEYRING_KEY_FILE": str(tmp_path / "k")}
        )


@pytest.mark.req("C1")
def test_dotenv_is_read_in_development_only(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("GARRISON_ACCESS_TTL=600\n")
    dev = load_settings({"GARRISON_DOTENV": str(dotenv)})
    assert dev.access_ttl == 600
    production = load_settings(prod(GARRISON_DOTENV=str(dotenv)))
    assert production.access_ttl == 900


@pytest.mark.req("C1")
def test_environment_wins_over_garrison_toml(tmp_path: Path) -> None:
    toml = tmp_path / "garrison.toml"
    toml.write_text('access_ttl = 300\naudience = "from-file"\n')
    settings = load_settings({"GARRISON_CONFIG": str(toml), "GARRISON_AUDIENCE": "from-env"})
    assert settings.access_ttl == 300
    assert settings.audience == "from-env"


@pytest.mark.req("C1")
def test_unknown_toml_setting_is_named(tmp_path: Path) -> None:
    toml = tmp_path / "garrison.toml"
    toml.write_text("acces_ttl = 300\n")
    with pytest.raises(ConfigError, match="acces_ttl"):
        load_settings({"GARRISON_CONFIG": str(toml)})


@pytest.mark.req("C1")
def test_invalid_values_are_all_reported_with_their_setting() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"GARRISON_ACCESS_TTL": "soon", "GARRISON_SIGNING_ALG": "HS256"})
    text = " ".join(caught.value.problems)
    assert "GARRISON_ACCESS_TTL" in text
    assert "GARRISON_SIGNING_ALG" in text


@pytest.mark.req("C1", "A13")
def test_login_budgets_that_do_not_nest_are_refused_by_name() -> None:
    """An account-wide ceiling under the pair's budget would let anyone's guesses lock the
    account for everybody: a setting mistake, named rather than silently honoured."""
    with pytest.raises(ConfigError) as caught:
        load_settings(
            {
                "GARRISON_LOGIN_MAX_FAILURES": "10",
                "GARRISON_LOGIN_MAX_FAILURES_PER_ACCOUNT": "5",
                "GARRISON_LOGIN_BACKOFF_BASE": "60",
                "GARRISON_LOGIN_BACKOFF_MAX": "30",
            }
        )
    text = " ".join(caught.value.problems)
    assert "GARRISON_LOGIN_MAX_FAILURES_PER_ACCOUNT (5) must be at least" in text
    assert "GARRISON_LOGIN_BACKOFF_MAX (30) must be at least GARRISON_LOGIN_BACKOFF_BASE" in text
    fine = load_settings({"GARRISON_LOGIN_MAX_FAILURES": "10"})
    assert (fine.login_max_failures, fine.login_max_failures_per_account) == (10, 100)
    assert (fine.login_backoff_base, fine.login_backoff_max) == (1.0, 900)


@pytest.mark.req("C2")
@pytest.mark.parametrize(
    "weak", ["dev-token", "changeme", "admin/changeme", "secret", "short-but-random-9f8"]
)
def test_production_refuses_known_weak_or_short_secrets(weak: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(prod(SECRET_ENCRYPTION_KEY=weak))
    assert any(p.startswith("SECRET_ENCRYPTION_KEY:") for p in caught.value.problems)


@pytest.mark.req("C2")
def test_production_refuses_low_entropy_secret() -> None:
    assert secret_problem("X", "a" * 64) is not None
    assert secret_problem("X", STRONG["SECRET_ENCRYPTION_KEY"]) is None


@pytest.mark.req("C2", "C3")
def test_production_names_every_offending_setting_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"GARRISON_ENV": "production", "SECRET_ENCRYPTION_KEY": "changeme"})
    named = {p.split(":")[0] for p in caught.value.problems}
    assert set(SECRET_SETTINGS) <= named
    assert "DATABASE_URL" in named


@pytest.mark.req("C3")
@pytest.mark.parametrize(
    "url",
    [
        "",
        "postgresql://app@db/garrison",
        "postgresql://app@db/garrison?sslmode=prefer",
        "postgres://app@db/garrison?sslmode=disable",
        "sqlite:///garrison.db",
    ],
)
def test_production_refuses_unsafe_database_urls(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(prod(DATABASE_URL=url))
    assert any(p.startswith("DATABASE_URL:") for p in caught.value.problems)


@pytest.mark.req("C3")
@pytest.mark.parametrize("mode", ["require", "verify-ca", "verify-full"])
def test_production_accepts_tls_database_urls(mode: str) -> None:
    settings = load_settings(prod(DATABASE_URL=f"postgresql://app@db/g?sslmode={mode}"))
    assert settings.production


@pytest.mark.req("C2")
def test_serve_in_production_exits_1_naming_each_setting(tmp_path: Path) -> None:
    env = base_env(tmp_path, GARRISON_ENV="production", SECRET_ENCRYPTION_KEY="changeme")
    result = run_cli("serve", "--port", "1", env=env)
    assert result.returncode == 1
    for name in (*SECRET_SETTINGS, "DATABASE_URL"):
        assert name in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.req("C4")
def test_secrets_generate_prints_values_production_accepts(tmp_path: Path) -> None:
    first = run_cli("secrets", "generate", "--json", env=base_env(tmp_path))
    second = run_cli("secrets", "generate", env=base_env(tmp_path))
    assert first.returncode == 0
    assert second.returncode == 0
    import json

    values = json.loads(first.stdout)
    assert set(values) == set(GENERATED_SECRETS)
    for name, value in values.items():
        assert secret_problem(name, value) is None
        assert value not in second.stdout  # fresh every time
    assert load_settings(prod(**values)).production


@pytest.mark.req("E8", "E7")
@pytest.mark.parametrize(
    "prefix", ["/", "/auth", "/auth/login", "/admin/", "/.well-known", "/v1/secrets/x"]
)
def test_a_proxied_route_cannot_shadow_garrisons_own_paths(tmp_path: Path, prefix: str) -> None:
    toml = tmp_path / "garrison.toml"
    toml.write_text(
        f'[[routes]]\nprefix = "{prefix}"\naction = "ticket.read"\nupstream = "http://127.0.0.1:9"\n'
    )
    with pytest.raises(ConfigError, match="covers Garrison's own"):
        load_settings({"GARRISON_CONFIG": str(toml)})


@pytest.mark.req("E8")
def test_proxied_routes_beside_garrisons_paths_are_fine(tmp_path: Path) -> None:
    toml = tmp_path / "garrison.toml"
    toml.write_text(
        '[[routes]]\nprefix = "/api"\naction = "ticket.read"\nupstream = "http://127.0.0.1:9"\n'
        '[[routes]]\nprefix = "/v1/tickets"\naction = "ticket.read"\nupstream = "http://127.0.0.1:9"\n'
        '[[routes]]\nprefix = "/authors"\naction = "ticket.read"\nupstream = "http://127.0.0.1:9"\n'
    )
    assert len(load_settings({"GARRISON_CONFIG": str(toml)}).routes) == 3


@pytest.mark.req("E8")
def test_every_route_garrison_serves_is_reserved_from_the_proxy() -> None:
    from starlette.routing import Route

    from garrison.config.settings import RESERVED_PATHS
    from garrison.gateway.asgi import app_routes

    paths = [route.path for route in app_routes() if isinstance(route, Route)]
    assert paths
    for path in [*paths, "/verify"]:
        assert any(path == r or path.startswith(r + "/") for r in RESERVED_PATHS), path
