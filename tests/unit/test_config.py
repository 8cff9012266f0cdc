"""Config: the example file is the defaults, unknown keys are named, precedence holds."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from pydantic import BaseModel

from collector.config import Config, load_config
from collector.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config.example.toml"


def test_example_file_loads_to_exactly_the_defaults() -> None:
    assert load_config(EXAMPLE, env={}) == Config()


def test_example_file_documents_every_key() -> None:
    data = tomllib.loads(EXAMPLE.read_text())
    for section, field in Config.model_fields.items():
        model = field.annotation
        assert isinstance(model, type) and issubclass(model, BaseModel)
        assert section in data, f"[{section}] missing from config.example.toml"
        for key in model.model_fields:
            assert key in data[section], f"{section}.{key} missing from config.example.toml"


def test_unknown_key_in_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[storage]\npaht = "x.duckdb"\n')
    with pytest.raises(ConfigError, match=r"storage\.paht: unknown key"):
        load_config(path, env={})


def test_unknown_section_is_named(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[storrage]\n")
    with pytest.raises(ConfigError, match="storrage: unknown key"):
        load_config(path, env={})


def test_invalid_value_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[storage]\nretention_days = -1\n")
    with pytest.raises(ConfigError, match=r"storage\.retention_days"):
        load_config(path, env={})


def test_bad_toml_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[storage\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path, env={})


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "nope.toml", env={})


def test_precedence_defaults_file_env_flags(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        '[storage]\npath = "file.duckdb"\nretention_days = 3\n[server]\ngrpc = "127.0.0.1:1"\n'
    )
    env = {"HERALD_STORAGE__PATH": "env.duckdb", "HERALD_SERVER__GRPC": "127.0.0.1:2"}
    cfg = load_config(path, env=env, overrides={"server": {"grpc": "127.0.0.1:3"}})
    assert cfg.storage.path == "env.duckdb"  # env beats file
    assert cfg.storage.retention_days == 3  # file beats default
    assert cfg.server.grpc == "127.0.0.1:3"  # flag beats env
    assert cfg.server.http == "127.0.0.1:4318"  # default


def test_env_values_are_parsed_as_json_when_they_look_like_it() -> None:
    env = {
        "HERALD_AUTOMATIONS__ALLOW_COMMANDS": "true",
        "HERALD_AUTH__TOKENS": '[{"token": "abcdefgh123", "scopes": ["read"]}]',
    }
    cfg = load_config(None, env=env)
    assert cfg.automations.allow_commands is True
    assert cfg.auth.tokens[0].scopes[0].value == "read"


def test_unknown_env_key_is_named() -> None:
    with pytest.raises(ConfigError, match=r"server\.grcp: unknown key"):
        load_config(None, env={"HERALD_SERVER__GRCP": "x"})


def test_client_variables_are_not_config_keys() -> None:
    env = {"HERALD_ADDRESS": "127.0.0.1:1", "HERALD_TOKEN": "t", "HERALD_CONFIG": "x"}
    assert load_config(None, env=env) == Config()
