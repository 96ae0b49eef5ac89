"""One place for configuration: a TOML file with the settings' own names, found at a documented
path or named; environment variables override it; mistakes are one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.cli import run
from continuity.errors import ConfigurationError
from continuity.settings import Settings, config_file

TOML = """
api_port = 8123
telephony = "none"
data_dir = "/srv/continuity"

[timings]
confirm_window_s = 300
restore_targets_s = { 1 = 600 }

[webhooks.dic]
url = "https://dic.example.vn/hook"
token = "s3cret"
"""


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in ("CONTINUITY_CONFIG", "CONTINUITY_API_PORT", "CONTINUITY_TELEPHONY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_file_gives_settings_and_the_environment_overrides_it(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = clean_env / "site.toml"
    path.write_text(TOML)
    monkeypatch.setenv("CONTINUITY_CONFIG", str(path))
    s = Settings()
    assert (s.api_port, s.telephony, s.data_dir) == (8123, "none", Path("/srv/continuity"))
    assert s.timings.confirm_window_s == 300 and s.timings.restore_targets_s == {1: 600}
    assert s.webhooks["dic"].token is not None
    assert s.webhooks["dic"].token.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(s)
    monkeypatch.setenv("CONTINUITY_API_PORT", "9000")
    assert Settings().api_port == 9000  # the environment wins
    assert Settings(api_port=7000).api_port == 7000  # and code wins over both


def test_the_working_directory_file_is_found_without_being_named(clean_env: Path) -> None:
    assert config_file() is None and Settings().api_port == 8000
    (clean_env / "continuity.toml").write_text("api_port = 8124\n")
    assert config_file() == Path("continuity.toml") and Settings().api_port == 8124


def test_a_missing_or_broken_file_is_one_clear_error(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONTINUITY_CONFIG", str(clean_env / "nope.toml"))
    with pytest.raises(ConfigurationError, match="nope.toml, which is not a file"):
        Settings()
    broken = clean_env / "broken.toml"
    broken.write_text("api_port = [unclosed\n")
    monkeypatch.setenv("CONTINUITY_CONFIG", str(broken))
    with pytest.raises(ConfigurationError, match=r"config file .*broken.toml"):
        Settings()


def test_the_cli_takes_the_file_before_any_command(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = clean_env / "site.toml"
    path.write_text(TOML)
    monkeypatch.setenv("CONTINUITY_CONFIG", "")  # put back after the test: --config sets it
    assert run(["--config", str(path), "config", "show"]) == 0
    captured = capsys.readouterr()
    assert f"# config file: {path.resolve()}" in captured.err
    assert '"api_port": 8123' in captured.out and "s3cret" not in captured.out
