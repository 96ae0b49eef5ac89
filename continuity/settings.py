"""One settings object, read from CONTINUITY_* environment variables at the edges only."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from continuity.errors import ConfigurationError
from continuity.messages import Timings
from continuity.models import Role

# A level's circuits verified on backup within this long of the declaration, or a breach:
# command circuits (level 1) in a quarter of an hour, the last level within four hours.
DEFAULT_RESTORE_TARGETS_S = {1: 900.0, 2: 1800.0, 3: 3600.0, 4: 7200.0, 5: 14400.0}


class ApiToken(BaseModel):
    """Who a bearer token belongs to and what it may do."""

    subject: str  # an operator id, a duty officer id or an auditor's name
    role: Role
    token_id: str = ""  # the store's id of the token ("" for a settings token of the demo)


class DeviceCredential(BaseModel):
    username: str
    password: SecretStr | None = None
    private_key_path: Path | None = None


class WebhookTarget(BaseModel):
    """Where a playbook's `notify_webhook` step posts (e.g. the DIC's incident system). The
    playbook names the target only: its address and token stay in the worker's settings,
    never in a history."""

    url: str = Field(pattern=r"^https?://[^\s]+$")
    token: SecretStr | None = None  # sent as "Authorization: Bearer …"


# Where the configuration file is looked for when CONTINUITY_CONFIG does not name one: the
# working directory's, then the host's. Environment variables override what it says.
CONFIG_PATHS = (Path("continuity.toml"), Path("/etc/continuity/continuity.toml"))


def config_file() -> Path | None:
    """The TOML file the settings read: CONTINUITY_CONFIG (which must exist), else the first
    of CONFIG_PATHS that does, else None."""
    named = os.environ.get("CONTINUITY_CONFIG")
    if named:
        path = Path(named)
        if not path.is_file():
            raise ConfigurationError(f"CONTINUITY_CONFIG names {path}, which is not a file")
        return path
    return next((p for p in CONFIG_PATHS if p.is_file()), None)


class Settings(BaseSettings):
    """Every setting, from (highest first) the constructor, CONTINUITY_* environment variables,
    the TOML config file (same names, lower case, without the prefix; nested tables for
    nested settings), then the defaults."""

    model_config = SettingsConfigDict(
        env_prefix="CONTINUITY_", env_nested_delimiter="__", extra="ignore"
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = config_file()
        sources: tuple[PydanticBaseSettingsSource, ...] = (init_settings, env_settings)
        if path is not None:
            try:
                sources += (TomlConfigSettingsSource(settings_cls, toml_file=path),)
            except (OSError, ValueError) as e:  # tomllib.TOMLDecodeError is a ValueError
                raise ConfigurationError(f"config file {path}: {e}") from None
        return sources

    data_dir: Path = Path("continuity-data")
    # Empty: a SQLite file under data_dir. Kept out of repr: the URL may carry a password.
    database_url: str = Field(default="", repr=False)
    # Threads (and database connections) for the API's store work. Few: each holds the GIL
    # for its CPU between queries, and 32 of them starved the event loop (a 200-device burst
    # of decisions: p99 746 ms at 32, 388 ms at 8, on 2 cores; bench/, STORE_THREADS).
    store_threads: int = Field(default=8, ge=1, le=256)
    # The worker's: its device activities write transcripts and states as lines go out, a few
    # round trips each (on 2 cores with a local PostgreSQL, 24 were no slower than 6; bench/).
    worker_store_threads: int = Field(default=16, ge=1, le=256)
    # How long a decision's answer waits for the incident to be told (its signal accepted).
    # The claim in the store is what makes a 200 take effect; past this the answer says
    # "delivered": false and the signal goes on in the background (an operator's screen
    # stays quick while Temporal is busy). 50 ms: a quick Temporal accepts a signal in a few;
    # at 200 ms, 200 changes pending at once put the wait itself in the p99 (bench/).
    decision_signal_wait_s: float = Field(default=0.05, ge=0, le=30)
    # An incident's status (GET /incidents/{id}, what every console polls each 1.5 s) is
    # asked of its workflow at most once per this many seconds, whatever the number of screens;
    # an order sent through the API makes the next read new. 0: every read asks (concurrent
    # reads still share one).
    status_fresh_s: float = Field(default=1.0, ge=0, le=30)
    # The most devices one declaration may cover. An incident's history grows by about 10
    # events and 5 KB a device (bench/, 1,000 devices: 11,132 events, 4.71 MB); Temporal ends
    # a workflow at 51,200 events or 50 MiB. 2,000 leaves room for retries and failures.
    max_devices_per_incident: int = Field(default=2000, ge=1, le=4000)

    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    task_queue: str = "continuity"
    # Production (CONTINUITY_PRODUCTION=1) refuses to reach Temporal without mutual TLS. TLS is
    # used whenever any of the four below is set; the server name defaults to the address's host.
    production: bool = False
    temporal_tls_ca: Path | None = None  # the CA the frontend's certificate must chain to
    temporal_tls_cert: Path | None = None  # this process's client certificate (PEM)
    temporal_tls_key: Path | None = None  # and its private key (PEM)
    temporal_tls_server_name: str | None = None  # the name the frontend's certificate carries
    # Durations handed to each new incident's workflow (confirmation window, escalation, the
    # target time to restore per restoration level, ...).
    timings: Timings = Field(default_factory=Timings)

    # The time zone the console shows times in (UTC beside them); reports for the authorities
    # stay in UTC+7, the zone they are read in.
    display_zone: str = "Asia/Ho_Chi_Minh"

    @field_validator("display_zone")
    @classmethod
    def _zone(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            why = f"unknown time zone {v!r} (an IANA name, e.g. Asia/Ho_Chi_Minh)"
            raise ValueError(why) from None
        return v

    api_host: str = "127.0.0.1"
    api_port: int = 8000
    # Token -> who and what role, for the embedded demo only: a deployment keeps its principals
    # in the store (`continuity token create`), which holds only a hash of each token.
    api_tokens: dict[str, ApiToken] = Field(default_factory=dict, repr=False)
    # Optional OIDC / JWT bearer tokens from the carrier's identity provider (continuity/oidc.py).
    # Off unless an issuer is set; the keys come from a JWKS URL or a JWKS file.
    oidc_issuer: str | None = None
    oidc_audience: str | None = None
    oidc_jwks_url: str | None = None
    oidc_jwks_file: Path | None = None
    oidc_role_claim: str = "continuity_role"  # a string or a list; exactly one must be a role
    oidc_subject_claim: str = "sub"
    # The IdP's group or role names -> our roles, where they differ (e.g. {"noc-ops": "operator"}).
    oidc_role_map: dict[str, Role] = Field(default_factory=dict)

    # Devices: credentials by reference name; the pinned host keys live in known_hosts.
    device_credentials: dict[str, DeviceCredential] = Field(default_factory=dict)
    # Name -> webhook target, for playbooks' notify_webhook steps (JSON in the environment).
    webhooks: dict[str, WebhookTarget] = Field(default_factory=dict, repr=False)
    known_hosts: Path | None = None  # None: data_dir/known_hosts
    ssh_connect_timeout_s: float = 10.0
    ssh_command_timeout_s: float = 30.0
    # SSH sessions in use across the worker; per device (5 vty lines, one kept spare for rescue);
    # connection setups in flight (the handshake pacing); optionally a rate on top (None: none).
    ssh_max_sessions: int = 64
    ssh_max_sessions_per_device: int = 1
    ssh_max_handshakes: int = 16
    ssh_new_connections_per_s: float | None = None
    # Logged-in sessions kept between uses: closed after this long idle; at most this many idle
    # (least recently used closed first).
    ssh_idle_s: float = 60.0
    ssh_pool_size: int = 512

    # Who places the duty calls and SMS: the real Twilio, a Twilio-compatible sandbox at
    # twilio_api_base (the embedded stack's), or nobody (every incident records it).
    telephony: Literal["twilio", "sandbox", "none"] = "twilio"
    # Twilio (or the local sandbox).
    twilio_account_sid: str = "AC00000000000000000000000000000000"
    twilio_auth_token: SecretStr = SecretStr("")
    twilio_from_number: str = "+15005550006"
    twilio_api_base: str | None = None  # None: the real api.twilio.com; else e.g. the sandbox
    public_base_url: str = "http://127.0.0.1:8000"  # what Twilio calls back; signatures cover it
    voice_vi: str = "Google.vi-VN-Standard-A"
    voice_en: str = "Polly.Joanna"

    # The deployment's Ed25519 key that signs audit bundles (`continuity keys generate`);
    # None: data_dir/signing.key. Auditors get its .pub; old public keys stay valid for old
    # bundles after a rotation.
    signing_key: Path | None = None

    # Record keeping beyond Temporal's retention: the worker writes each closed incident's
    # signed bundle here (None: no archive). At start it warns, and in production refuses,
    # when the namespace keeps histories for less than record_period_days and no archive is
    # configured.
    archive_dir: Path | None = None
    archive_interval_s: float = Field(default=60.0, gt=0)  # how often the archive looks
    record_period_days: int = Field(default=3650, ge=1)

    @property
    def signing_key_path(self) -> Path:
        return self.signing_key or self.data_dir / "signing.key"

    @property
    def sqlalchemy_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'continuity.db').resolve()}"

    def production_problems(self) -> list[str]:
        """What production mode refuses besides TLS and telephony (checked where those are)."""
        if not self.production:
            return []
        problems = []
        if not self.database_url:
            problems.append(
                "CONTINUITY_DATABASE_URL is unset: production keeps its record in PostgreSQL, "
                "not in the embedded SQLite file"
            )
        if self.api_tokens:
            problems.append(
                "CONTINUITY_API_TOKENS is set: production principals are store tokens "
                "(continuity token create), kept as hashes"
            )
        if not self.signing_key_path.exists():
            problems.append(
                f"no signing key at {self.signing_key_path} (CONTINUITY_SIGNING_KEY): production "
                "signs every human action and audit bundle; run `continuity keys generate`"
            )
        return problems

    @field_validator("timings")
    @classmethod
    def _default_targets(cls, v: Timings) -> Timings:
        """The deployment's targets unless they were given (whatever other durations were):
        Timings' own default is none, as every history recorded before targets had."""
        if "restore_targets_s" in v.model_fields_set:
            return v
        return v.model_copy(update={"restore_targets_s": dict(DEFAULT_RESTORE_TARGETS_S)})

    @property
    def masked_database_url(self) -> str:
        """The database URL with its password replaced by ***, for printing."""
        from sqlalchemy.engine import make_url

        return make_url(self.sqlalchemy_url).render_as_string(hide_password=True)

    @property
    def known_hosts_path(self) -> Path:
        return self.known_hosts or self.data_dir / "known_hosts"


def check_startup(settings: Settings) -> None:
    """Everything a worker or an API refuses to start with, before it touches Temporal or the
    store: unusable TLS, unusable telephony, and production's other refusals."""
    from continuity.telephony import check_telephony
    from continuity.temporal import temporal_tls_config

    temporal_tls_config(settings)
    check_telephony(settings)
    check_production(settings)


def check_production(settings: Settings) -> None:
    """Refuse a production start on the demo's conveniences (SQLite, settings tokens)."""
    problems = settings.production_problems()
    if problems:
        raise ConfigurationError("; ".join(problems))


__all__ = [
    "CONFIG_PATHS",
    "ApiToken",
    "DeviceCredential",
    "Settings",
    "WebhookTarget",
    "check_production",
    "check_startup",
    "config_file",
]
