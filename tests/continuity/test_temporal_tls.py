"""Reaching Temporal over mutual TLS, and refusing to start in production without it."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import pytest_asyncio
import yaml

from app.stack import temporal_binary
from continuity.errors import ConfigurationError, TemporalUnavailable
from continuity.settings import Settings
from continuity.temporal import connect_temporal

ROOT = Path(__file__).parent.parent.parent
MAKE_CERTS = ROOT / "deploy" / "make-certs.sh"
TLS_VARIABLES = (
    "CONTINUITY_TEMPORAL_TLS_CA, CONTINUITY_TEMPORAL_TLS_CERT, CONTINUITY_TEMPORAL_TLS_KEY"
)


def make_certs(out: Path) -> Path:
    subprocess.run([str(MAKE_CERTS), str(out)], check=True, capture_output=True, timeout=60)
    return out


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_certs(tmp_path_factory.mktemp("certs") / "certs")


@dataclass
class TlsFrontend:
    """A TLS listener standing in for Temporal's frontend: it requires a client certificate
    from the test CA, records who completed a handshake, then hangs up (so the gRPC call fails)."""

    port: int
    client_names: list[str] = field(default_factory=list)
    server_names: list[str | None] = field(default_factory=list)  # what clients sent as SNI
    alpn: list[str | None] = field(default_factory=list)


@pytest_asyncio.fixture
async def frontend(certs: Path) -> AsyncIterator[TlsFrontend]:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(certs / "temporal.pem", certs / "temporal.key")
    ctx.load_verify_locations(certs / "ca.pem")
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.set_alpn_protocols(["h2"])
    seen = TlsFrontend(port=0)
    ctx.sni_callback = lambda _obj, name, _ctx: seen.server_names.append(name)

    async def handshake_done(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        subject = dict(rdn[0] for rdn in w.get_extra_info("peercert")["subject"])
        seen.client_names.append(subject["commonName"])
        seen.alpn.append(w.get_extra_info("ssl_object").selected_alpn_protocol())
        w.close()

    server = await asyncio.start_server(handshake_done, "127.0.0.1", 0, ssl=ctx)
    seen.port = server.sockets[0].getsockname()[1]
    yield seen
    server.close()
    await server.wait_closed()


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A plain TCP port nobody should connect to: the refused commands are pointed at it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        s.setblocking(False)
        yield s


def nobody_connected(s: socket.socket) -> bool:
    try:
        s.accept()[0].close()
    except BlockingIOError:
        return True
    return False


def run_command(
    args: list[str], *, data_dir: Path, temporal: socket.socket, **env: str
) -> subprocess.CompletedProcess[str]:
    # Only what the test sets: the machine's own CONTINUITY_* must not decide the outcome.
    base = {k: v for k, v in os.environ.items() if not k.startswith("CONTINUITY_")}
    host, port = temporal.getsockname()
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
        env={
            **base,
            "CONTINUITY_PRODUCTION": "1",
            "CONTINUITY_DATA_DIR": str(data_dir),
            "CONTINUITY_TEMPORAL_ADDRESS": f"{host}:{port}",
            "CONTINUITY_API_PORT": "0",
            **env,
        },
    )


def assert_refused_in_one_line(r: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error: ")
    for needle in needles:
        assert needle in lines[0]


def test_worker_command_production_without_tls_refused_before_connecting(
    tmp_path: Path, listener: socket.socket
):
    r = run_command(["-m", "app.cli", "worker"], data_dir=tmp_path, temporal=listener)
    assert_refused_in_one_line(r, "CONTINUITY_PRODUCTION", TLS_VARIABLES, "deploy/make-certs.sh")
    assert nobody_connected(listener)
    assert not (tmp_path / "continuity.db").exists()


def test_worker_script_production_without_tls_refused_before_connecting(
    tmp_path: Path, listener: socket.socket
):
    r = run_command(["worker.py"], data_dir=tmp_path, temporal=listener)
    assert_refused_in_one_line(r, TLS_VARIABLES)
    assert nobody_connected(listener)


def test_api_command_production_without_tls_refused_before_connecting(
    tmp_path: Path, listener: socket.socket
):
    r = run_command(["-m", "app.cli", "api"], data_dir=tmp_path, temporal=listener)
    assert_refused_in_one_line(r, TLS_VARIABLES)
    assert nobody_connected(listener)


def test_api_command_production_missing_cert_file_refused(
    tmp_path: Path, listener: socket.socket, certs: Path
):
    missing = tmp_path / "api.pem"
    r = run_command(
        ["-m", "app.cli", "api"],
        data_dir=tmp_path,
        temporal=listener,
        CONTINUITY_TEMPORAL_TLS_CA=str(certs / "ca.pem"),
        CONTINUITY_TEMPORAL_TLS_CERT=str(missing),
        CONTINUITY_TEMPORAL_TLS_KEY=str(certs / "api.key"),
    )
    assert_refused_in_one_line(r, f"CONTINUITY_TEMPORAL_TLS_CERT={missing}", "cannot be read")
    assert nobody_connected(listener)


async def test_production_names_only_the_missing_tls_settings(certs: Path):
    with pytest.raises(ConfigurationError) as refused:
        await connect_temporal(
            Settings(
                production=True,
                temporal_tls_ca=certs / "ca.pem",
                temporal_tls_cert=certs / "worker.pem",
            )
        )
    assert "set CONTINUITY_TEMPORAL_TLS_KEY (" in refused.value.message


async def test_tls_cert_without_key_refused(certs: Path):
    with pytest.raises(ConfigurationError, match="go together"):
        await connect_temporal(Settings(production=False, temporal_tls_cert=certs / "worker.pem"))


async def test_tls_file_not_pem_refused(certs: Path, tmp_path: Path):
    garbage = tmp_path / "ca.pem"
    garbage.write_text("not a certificate", encoding="utf-8")
    with pytest.raises(ConfigurationError, match="is not a PEM file"):
        await connect_temporal(Settings(production=False, temporal_tls_ca=garbage))


async def test_connect_with_tls_presents_client_certificate(frontend: TlsFrontend, certs: Path):
    settings = Settings(
        production=True,
        temporal_address=f"127.0.0.1:{frontend.port}",
        temporal_tls_ca=certs / "ca.pem",
        temporal_tls_cert=certs / "worker.pem",
        temporal_tls_key=certs / "worker.key",
        temporal_tls_server_name="temporal",
    )
    # The stand-in hangs up after the handshake, so the client's first call fails.
    with pytest.raises(TemporalUnavailable):
        await asyncio.wait_for(connect_temporal(settings), 30)
    assert frontend.client_names and set(frontend.client_names) == {"worker"}
    assert set(frontend.server_names) == {"temporal"}
    assert set(frontend.alpn) == {"h2"}


async def test_connect_with_tls_server_of_another_ca_refused_by_client(
    frontend: TlsFrontend, certs: Path, tmp_path: Path
):
    other_ca = make_certs(tmp_path / "other") / "ca.pem"
    settings = Settings(
        temporal_address=f"127.0.0.1:{frontend.port}",
        temporal_tls_ca=other_ca,
        temporal_tls_cert=certs / "worker.pem",
        temporal_tls_key=certs / "worker.key",
        temporal_tls_server_name="temporal",
    )
    with pytest.raises(TemporalUnavailable):
        await asyncio.wait_for(connect_temporal(settings), 30)
    assert frontend.client_names == []


async def test_compose_healthcheck_presents_temporal_certificate(
    frontend: TlsFrontend, certs: Path
):
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    check = compose["services"]["temporal"]["healthcheck"]["test"]
    assert check[:2] == ["CMD", "temporal"]
    # The container's paths and address, mapped onto this machine; the flags stay as written.
    args = [
        a.replace("/etc/temporal/tls", str(certs)).replace(
            "temporal:7233", f"127.0.0.1:{frontend.port}"
        )
        for a in check[2:]
    ]
    cli = await asyncio.create_subprocess_exec(
        temporal_binary(), *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    await asyncio.wait_for(cli.communicate(), 60)
    assert cli.returncode != 0  # the stand-in is no Temporal
    assert frontend.client_names and set(frontend.client_names) == {"temporal"}
    assert set(frontend.server_names) == {"temporal"}
