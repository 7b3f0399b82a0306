"""Each feature's frozen config is built once by the composition root (issue 8): secrets the
settings only name come from the environment ``build_services`` is handed, never read by the
domain (C1)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from garrison.app import (
    build_services,
    external_idp_config,
    oidc_config,
    policy_config,
    rate_limit_config,
    vault_config,
)
from garrison.errors import ConfigError
from garrison.policy.engine import DEFAULTS_DIR
from tests.conftest import MakeSettings

VAR = "GARRISON_TEST_ONLY_IN_THE_MAPPING"
SECRET = "an-idp-shared-secret-long-enough-to-pass-c2-0123456789"
OIDC = {"corp": {"issuer": "https://idp.example.com", "client_id": "c", "client_secret_env": VAR}}
IDP = {"corp": {"issuer": "https://corp", "audience": "a", "hs256_secret_env": VAR}}


@pytest.mark.req("C1", "A11")
def test_an_oidc_client_secret_comes_from_the_environment_handed_over(
    make_settings: MakeSettings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(VAR, raising=False)
    monkeypatch.delenv(f"{VAR}_FILE", raising=False)
    settings = make_settings(oidc=OIDC)
    svc = build_services(settings, environ={VAR: "from-the-mapping"})
    try:
        assert svc.oidc.providers["corp"].client_secret == "from-the-mapping"
    finally:
        svc.close()
    secret_file = tmp_path / "client-secret"
    secret_file.write_text("from-a-file\n")
    config = oidc_config(settings, {f"{VAR}_FILE": str(secret_file)})
    assert config.client_secrets == {VAR: "from-a-file"}
    assert "from-a-file" not in repr(config)
    monkeypatch.setenv(VAR, "in-the-process-environment")
    with pytest.raises(ConfigError, match=f"{VAR}: missing"):
        build_services(settings, environ={})  # the process environment is not consulted


@pytest.mark.req("C1", "A10")
def test_an_idp_secret_comes_from_the_environment_handed_over(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    settings = make_settings(external_idps=IDP)
    assert external_idp_config(settings, {VAR: SECRET}).secrets == {VAR: SECRET}
    assert external_idp_config(settings, {}).secrets == {}
    with pytest.raises(ConfigError, match=f"{VAR}_FILE: cannot read"):
        external_idp_config(settings, {f"{VAR}_FILE": str(tmp_path / "absent")})


@pytest.mark.req("C1", "Z1", "E3", "V3")
def test_feature_configs_are_frozen_and_carry_the_settings(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    toml = tmp_path / "etc" / "garrison.toml"
    toml.parent.mkdir()
    toml.write_text("")
    settings = make_settings(
        GARRISON_RATE_LIMIT_PER_WINDOW="77",
        GARRISON_POLICY_DIR="policies",
        GARRISON_CONFIG=str(toml),
        roles={"user": {}},
        oidc=OIDC,
    )
    policy = policy_config(settings)
    assert policy.policy_dir == tmp_path / "etc" / "policies"  # relative to the config file
    assert policy.roles.keys() == {"user"}
    assert policy_config(make_settings()).policy_dir == DEFAULTS_DIR
    limits = rate_limit_config(settings)
    assert (limits.per_window, limits.window) == (77, 60)
    oidc = oidc_config(settings, {VAR: "s"})
    for config in (policy, limits, oidc, vault_config(settings)):
        with pytest.raises(dataclasses.FrozenInstanceError):
            config.__setattr__(dataclasses.fields(config)[0].name, None)
    with pytest.raises(TypeError):
        policy.roles["admin"] = policy.roles["user"]  # type: ignore[index]
    with pytest.raises(TypeError):
        oidc.client_secrets[VAR] = "changed"  # type: ignore[index]
