"""A lab of real FRRouting routers in Linux network namespaces, each behind its own sshd."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import asyncssh
from pydantic import SecretStr

from continuity.errors import ContinuityError
from continuity.models import (
    Area,
    Circuit,
    CircuitPath,
    Device,
    DutyOfficer,
    Inventory,
    Language,
    NextHop,
    Operator,
    Platform,
    PriorityClass,
)
from continuity.settings import DeviceCredential

ROUTERS = ("r1", "r2", "r3")
HOSTS = ("host-a", "host-b")
USERNAME = "netops"
CREDENTIAL_NAME = "frr-lab"
CIRCUIT_ID = "cmd-hq-link"
PRIORITY_USERS = "10.91.1.0/24"  # host-a's subnet, behind r1
COMMAND_HQ = "10.92.1.0/24"  # host-b's subnet, behind r2

_FRR_DIR = Path("/usr/lib/frr")
_SSHD = Path("/usr/sbin/sshd")
_VTYSH = Path("/usr/bin/vtysh")
_UP_TIMEOUT_S = 30.0
_CMD_TIMEOUT_S = 15.0
_STOP_GRACE_S = 3.0


class FrrLabError(ContinuityError):
    """The lab could not be built or driven; a test or fixture bug, not a device answer."""


@dataclass(frozen=True)
class _Link:
    a: str
    a_if: str
    a_addr: str  # address/len on a's end
    b: str
    b_if: str
    b_addr: str


# Interface names inside the namespaces are stable (the namespaces isolate them); everything that
# lives in the root namespace (namespaces, bridge, management veths) carries the lab's tag.
_LINKS = (
    _Link("r1", "eth-r2", "10.93.12.1/24", "r2", "eth-r1", "10.93.12.2/24"),  # primary
    _Link("r1", "eth-r3", "10.93.13.1/24", "r3", "eth-r1", "10.93.13.3/24"),
    _Link("r2", "eth-r3", "10.93.23.2/24", "r3", "eth-r2", "10.93.23.3/24"),
    _Link("host-a", "eth0", "10.91.1.10/24", "r1", "eth-ha", "10.91.1.1/24"),
    _Link("host-b", "eth0", "10.92.1.10/24", "r2", "eth-hb", "10.92.1.1/24"),
)
_HOST_GATEWAY = {"host-a": "10.91.1.1", "host-b": "10.92.1.1"}
# The normal state: the primary link carries the circuit, r3 knows both user subnets.
_STATIC_ROUTES = {
    "r1": [(COMMAND_HQ, "10.93.12.2")],
    "r2": [(PRIORITY_USERS, "10.93.12.1")],
    "r3": [(PRIORITY_USERS, "10.93.13.1"), (COMMAND_HQ, "10.93.23.2")],
}
_BACKUP = {"r1": (COMMAND_HQ, "10.93.13.3"), "r2": (PRIORITY_USERS, "10.93.23.3")}
_MGMT_HOST_OCTET = {"r1": 11, "r2": 12, "r3": 13}


def _address(node: str, peer: str) -> str:
    for link in _LINKS:
        if (link.a, link.b) == (node, peer):
            return link.a_addr.split("/")[0]
        if (link.b, link.a) == (node, peer):
            return link.b_addr.split("/")[0]
    raise KeyError((node, peer))


def _run(
    argv: list[str],
    *,
    input: str | None = None,
    check: bool = True,
    timeout: float = _CMD_TIMEOUT_S,
) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(
            argv, input=input, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as e:
        raise FrrLabError(f"{' '.join(argv[:6])} timed out after {timeout}s") from e
    if check and proc.returncode != 0:
        raise FrrLabError(
            f"{' '.join(argv[:6])} failed ({proc.returncode}): {proc.stderr.strip()[:500]}"
        )
    return proc


def frr_lab_available() -> str | None:
    """None when this machine can run the lab; otherwise why not (for pytest.skip)."""
    if os.geteuid() != 0:
        return "the FRR lab needs root (network namespaces, sshd, bind mounts)"
    for tool in ("ip", "nsenter", "unshare", "traceroute", "ping", "openssl"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (run .ci/install-system-deps.sh)"
    for path in (_FRR_DIR / "zebra", _FRR_DIR / "staticd", _FRR_DIR / "frrinit.sh", _VTYSH):
        if not path.exists():
            return f"FRRouting is not installed: no {path} (run .ci/install-system-deps.sh)"
    if not _SSHD.exists():
        return f"OpenSSH server is not installed: no {_SSHD} (run .ci/install-system-deps.sh)"
    # Being root inside an unprivileged container is not enough: try a namespace for real.
    probe = f"ctprobe{secrets.token_hex(3)}"
    made = _run(["ip", "netns", "add", probe], check=False)
    if made.returncode != 0:
        return f"cannot create network namespaces: {made.stderr.strip()[:200]}"
    _run(["ip", "netns", "del", probe], check=False)
    return None


class FrrLab:
    """Three FRR routers (r1, r2, r3) and two user hosts in namespaces, managed over SSH.

    host-a (10.91.1.0/24) - r1 ==primary== r2 - host-b (10.92.1.0/24), and r1 - r3 - r2 as the
    backup path. The orchestrator reaches each router's sshd (login shell vtysh) on a management
    bridge in the root namespace.
    """

    def __init__(self, work_dir: Path, *, password: str = "lab-secret") -> None:
        self.tag = "ct" + secrets.token_hex(2)
        self.work_dir = Path(work_dir) / self.tag
        self._password = password
        self.bridge = f"{self.tag}-br"
        self.mgmt_net: ipaddress.IPv4Network | None = None
        self.known_hosts_path = self.work_dir / "known_hosts"
        self.client_key_path = self.work_dir / "netops_ed25519"
        self.credential = DeviceCredential(username=USERNAME, password=SecretStr(password))
        self.key_credential = DeviceCredential(
            username=USERNAME, private_key_path=self.client_key_path
        )
        self.timings: dict[str, float] = {}
        self._anchors: dict[str, subprocess.Popen[bytes]] = {}
        self._sshd: dict[str, subprocess.Popen[bytes]] = {}
        self._created_netns: list[str] = []
        self._bridge_made = False
        self._inventory: Inventory | None = None

    # --- names and addresses ---------------------------------------------------------------

    def netns(self, node: str) -> str:
        if node not in ROUTERS + HOSTS:
            raise FrrLabError(f"no node {node!r} in the lab")
        return f"{self.tag}-{node}"

    def mgmt_address(self, router: str) -> str:
        if self.mgmt_net is None:
            raise FrrLabError("the lab is not started")
        return str(self.mgmt_net.network_address + _MGMT_HOST_OCTET[router])

    @staticmethod
    def host_address(host: str) -> str:
        return _address(host, "r1" if host == "host-a" else "r2")

    @staticmethod
    def primary_next_hop(router: str) -> str:
        return _address("r2" if router == "r1" else "r1", router)

    @staticmethod
    def backup_next_hop(router: str) -> str:
        return _BACKUP[router][1]

    @property
    def inventory(self) -> Inventory:
        if self._inventory is None:
            raise FrrLabError("the lab is not started")
        return self._inventory

    # --- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> FrrLab:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)

    def start(self) -> None:
        """Build everything and wait until every sshd accepts and every vtysh has its routes."""
        began = time.monotonic()
        try:
            self._build()
        except BaseException:
            self.stop()
            raise
        self.timings["up_s"] = round(time.monotonic() - began, 3)

    def stop(self) -> None:
        """Tear down whatever exists; safe after a partial start and when called twice."""
        began = time.monotonic()
        self._stop_processes()
        for ns in self._created_netns:
            _run(["ip", "netns", "del", ns], check=False)
        self._created_netns.clear()
        for router in ROUTERS:
            _run(["ip", "link", "del", f"{self.tag}-m{router}"], check=False)
        if self._bridge_made:
            _run(["ip", "link", "del", self.bridge], check=False)
            self._bridge_made = False
        self.timings["down_s"] = round(time.monotonic() - began, 3)

    # --- what tests and fixtures use ---------------------------------------------------------

    def ping(self, src_host: str, dst_ip: str, *, count: int = 2, timeout_s: float = 2) -> bool:
        """True when at least one echo reply came back to src_host's namespace."""
        self._check_lab_address(dst_ip)
        argv = ["ip", "netns", "exec", self.netns(src_host), "ping", "-n", "-q"]
        argv += ["-c", str(count), "-i", "0.2", "-W", str(timeout_s), dst_ip]
        proc = _run(argv, check=False, timeout=count * (0.2 + timeout_s) + 5)
        return proc.returncode == 0

    def cut_link(self, a: str, b: str) -> None:
        """Sabotage: take both ends of the link between two nodes down."""
        link = self._link(a, b)
        for node, ifname in ((link.a, link.a_if), (link.b, link.b_if)):
            _run(["ip", "-n", self.netns(node), "link", "set", ifname, "down"])

    def restore_link(self, a: str, b: str) -> None:
        link = self._link(a, b)
        for node, ifname in ((link.a, link.a_if), (link.b, link.b_if)):
            _run(["ip", "-n", self.netns(node), "link", "set", ifname, "up"])

    def via(self, src_host: str, dst_ip: str) -> list[str]:
        """The routers that carried src_host's packets to dst_ip, in order (from traceroute).

        A hop that did not answer shows as "*", one that is no lab router as its address.
        """
        self._check_lab_address(dst_ip)
        argv = ["ip", "netns", "exec", self.netns(src_host), "traceroute", "-n", "-q", "1"]
        argv += ["-w", "1", "-m", "6", dst_ip]
        proc = _run(argv, check=False, timeout=30)
        owners = self._address_owners()
        hops: list[str] = []
        for line in proc.stdout.splitlines()[1:]:
            fields = line.split()
            if len(fields) < 2 or not fields[0].isdigit():
                continue
            addr = fields[1]
            if addr == dst_ip:
                break
            hops.append(owners.get(addr, addr))
        return hops

    def saved_config(self, router: str) -> str:
        """The router's /etc/frr/frr.conf as persisted (what `write memory` wrote)."""
        return (self._router_dir(router) / "etc-frr" / "frr.conf").read_text()

    def vtysh(self, router: str, command: str) -> str:
        """Run one vtysh command locally inside the router (no SSH), for assertions."""
        proc = _run(self._in_router(router, [str(_VTYSH), "-c", command]), check=False)
        if proc.returncode != 0:
            raise FrrLabError(f"{router}: vtysh -c {command!r}: {proc.stdout}{proc.stderr}")
        return proc.stdout

    # --- building ----------------------------------------------------------------------------

    def _build(self) -> None:
        self._check_tag_is_free()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.work_dir.chmod(0o700)
        self._make_namespaces_and_links()
        self._configure_namespaces()
        self._write_router_files()
        self._start_anchors()
        self._start_frr()
        self._start_sshd()
        self._inventory = self._make_inventory()
        self._wait_until_ready()

    def _check_tag_is_free(self) -> None:
        existing = _run(["ip", "netns", "list"]).stdout
        if self.tag in existing:
            raise FrrLabError(f"namespaces tagged {self.tag} already exist")

    def _make_namespaces_and_links(self) -> None:
        lines = []
        for node in ROUTERS + HOSTS:
            lines.append(f"netns add {self.netns(node)}")
        lines.append(f"link add name {self.bridge} type bridge")
        made = _run(["ip", "-batch", "-"], input="\n".join(lines) + "\n", check=False)
        # A batch that fails halfway has still made some of them: record what exists, so that
        # stop() removes exactly that (the tag was checked free, so all of it is ours).
        listed = _run(["ip", "netns", "list"]).stdout.split()
        self._created_netns = [self.netns(n) for n in ROUTERS + HOSTS if self.netns(n) in listed]
        self._bridge_made = True
        if made.returncode != 0:
            raise FrrLabError(f"creating namespaces failed: {made.stderr.strip()[:500]}")
        self._claim_mgmt_subnet()
        lines = []
        for link in _LINKS:
            lines.append(
                f"link add {link.a_if} netns {self.netns(link.a)} type veth"
                f" peer name {link.b_if} netns {self.netns(link.b)}"
            )
        for router in ROUTERS:
            root_end = f"{self.tag}-m{router}"
            lines.append(
                f"link add {root_end} type veth peer name mgmt0 netns {self.netns(router)}"
            )
            lines.append(f"link set {root_end} master {self.bridge} up")
        lines.append(f"link set {self.bridge} up")
        _run(["ip", "-batch", "-"], input="\n".join(lines) + "\n")

    def _claim_mgmt_subnet(self) -> None:
        """Pick a free /24 in 10.98.0.0/16 for the bridge; back off if another lab took it too."""
        for _ in range(8):
            net = ipaddress.IPv4Network(f"10.98.{secrets.randbelow(254) + 1}.0/24")
            if self._subnet_in_use(net, ignore_dev=None):
                continue
            gateway = f"{net.network_address + 1}/{net.prefixlen}"
            _run(["ip", "addr", "add", gateway, "dev", self.bridge])
            if self._subnet_in_use(net, ignore_dev=self.bridge):
                _run(["ip", "addr", "del", gateway, "dev", self.bridge], check=False)
                continue
            self.mgmt_net = net
            return
        raise FrrLabError("no free management /24 in 10.98.0.0/16")

    @staticmethod
    def _subnet_in_use(net: ipaddress.IPv4Network, *, ignore_dev: str | None) -> bool:
        for line in _run(["ip", "-4", "-o", "addr", "show"]).stdout.splitlines():
            fields = line.split()
            if fields[1] == ignore_dev:
                continue
            iface = ipaddress.IPv4Interface(fields[3])
            if iface.network.overlaps(net) and iface.network.prefixlen >= 16:
                return True
        for line in _run(["ip", "-4", "route", "show", "table", "all"]).stdout.splitlines():
            dest = line.split()[0] if line.split() else ""
            if dest in ("default", "broadcast", "local", "unreachable", "prohibit"):
                continue
            with contextlib.suppress(ValueError):
                route = ipaddress.IPv4Network(dest, strict=False)
                if route.overlaps(net) and route.prefixlen >= 16 and ignore_dev is None:
                    return True
        return False

    def _configure_namespaces(self) -> None:
        if self.mgmt_net is None:
            raise FrrLabError("no management subnet claimed")
        per_node: dict[str, list[str]] = {n: ["link set lo up"] for n in ROUTERS + HOSTS}
        for link in _LINKS:
            for node, ifname, addr in (
                (link.a, link.a_if, link.a_addr),
                (link.b, link.b_if, link.b_addr),
            ):
                per_node[node] += [f"addr add {addr} dev {ifname}", f"link set {ifname} up"]
        for router in ROUTERS:
            per_node[router] += [
                f"addr add {self.mgmt_address(router)}/{self.mgmt_net.prefixlen} dev mgmt0",
                "link set mgmt0 up",
            ]
            # Routers forward, so keep user traffic off the management network: nothing that
            # enters on a data link may be routed to the bridge in the root namespace.
            for link in _LINKS:
                for node, ifname in ((link.a, link.a_if), (link.b, link.b_if)):
                    if node == router:
                        per_node[router].append(
                            f"rule add iif {ifname} to {self.mgmt_net} prohibit"
                        )
        for host, gateway in _HOST_GATEWAY.items():
            per_node[host].append(f"route add default via {gateway}")
        for node, lines in per_node.items():
            _run(["ip", "-n", self.netns(node), "-batch", "-"], input="\n".join(lines) + "\n")

    def _router_dir(self, router: str) -> Path:
        return self.work_dir / router

    def _write_router_files(self) -> None:
        frr_uid, frr_gid = _ids("frr")
        passwd, group, shadow, gshadow, uid = self._account_files()
        self._write_keys()
        for router in ROUTERS:
            d = self._router_dir(router)
            for sub in ("etc-frr", "run/frr", "run/sshd", f"run/{USERNAME}/.ssh", "log/frr", "etc"):
                (d / sub).mkdir(parents=True, exist_ok=True)
            d.chmod(0o755)
            (d / "run").chmod(0o755)
            (d / "run/sshd").chmod(0o755)
            for sub in ("etc-frr", "run/frr", "log/frr"):
                os.chown(d / sub, frr_uid, frr_gid)
            (d / "etc-frr").chmod(0o750)
            (d / "run/frr").chmod(0o755)
            home = d / "run" / USERNAME
            for p in (home, home / ".ssh"):
                os.chown(p, uid, uid)
                p.chmod(0o700)
            keys = home / ".ssh/authorized_keys"
            keys.write_text(Path(f"{self.client_key_path}.pub").read_text())
            os.chown(keys, uid, uid)
            keys.chmod(0o600)
            for name, text, mode in (
                ("daemons", _DAEMONS, 0o640),
                ("vtysh.conf", _VTYSH_CONF, 0o640),
                ("frr.conf", _frr_conf(router), 0o640),
            ):
                path = d / "etc-frr" / name
                path.write_text(text)
                os.chown(path, frr_uid, frr_gid)
                path.chmod(mode)
            for name, text, mode in (
                ("passwd", passwd, 0o644),
                ("group", group, 0o644),
                ("shadow", shadow, 0o600),
                ("gshadow", gshadow, 0o600),
            ):
                path = d / "etc" / name
                path.write_text(text)
                path.chmod(mode)
            (d / "sshd_config").write_text(self._sshd_config(router))

    def _account_files(self) -> tuple[str, str, str, str, int]:
        """Per-lab copies of the account files: the host's public entries plus netops.

        The host's /etc/shadow is never copied: the lab's shadow holds only the lab user.
        """
        passwd = Path("/etc/passwd").read_text()
        group = Path("/etc/group").read_text()
        used_uids = {
            int(line.split(":")[2]) for line in passwd.splitlines() if line.count(":") >= 6
        }
        used_gids = {int(line.split(":")[2]) for line in group.splitlines() if line.count(":") >= 3}
        uid = next(i for i in range(60100, 61000) if i not in used_uids and i not in used_gids)
        passwd = (
            passwd.rstrip("\n") + f"\n{USERNAME}:x:{uid}:{uid}:FRR lab:/run/{USERNAME}:{_VTYSH}\n"
        )
        lines = []
        for line in group.splitlines():
            name, pw, gid, members = line.split(":", 3)
            if name in ("frr", "frrvty"):
                members = ",".join([m for m in members.split(",") if m] + [USERNAME])
            lines.append(":".join((name, pw, gid, members)))
        lines.append(f"{USERNAME}:x:{uid}:")
        group = "\n".join(lines) + "\n"
        hashed = _run(
            ["openssl", "passwd", "-6", "-stdin"], input=self._password + "\n"
        ).stdout.strip()
        # Empty "last change" disables password ageing, so sshd never demands a change.
        shadow = f"{USERNAME}:{hashed}::0:99999:7:::\n"
        gshadow = f"{USERNAME}:!::\nfrr:!::{USERNAME}\nfrrvty:!::{USERNAME}\n"
        return passwd, group, shadow, gshadow, uid

    def _write_keys(self) -> None:
        client = asyncssh.generate_private_key("ssh-ed25519", comment=f"{USERNAME}@{self.tag}")
        client.write_private_key(self.client_key_path)
        client.write_public_key(f"{self.client_key_path}.pub")
        self.client_key_path.chmod(0o600)
        known = []
        for router in ROUTERS:
            key = asyncssh.generate_private_key("ssh-ed25519", comment=f"{router}@{self.tag}")
            path = self._router_dir(router) / "ssh_host_ed25519_key"
            path.parent.mkdir(parents=True, exist_ok=True)
            key.write_private_key(path)
            path.chmod(0o600)
            public = key.export_public_key("openssh").decode().split()
            known.append(f"{self.mgmt_address(router)} {public[0]} {public[1]}\n")
        self.known_hosts_path.write_text("".join(known))

    def _sshd_config(self, router: str) -> str:
        d = self._router_dir(router)
        return (
            f"ListenAddress {self.mgmt_address(router)}:22\n"
            f"HostKey {d / 'ssh_host_ed25519_key'}\n"
            "PidFile /run/sshd.pid\n"
            "UsePAM no\n"
            f"AllowUsers {USERNAME}\n"
            "PermitRootLogin no\n"
            "PasswordAuthentication yes\n"
            "KbdInteractiveAuthentication no\n"
            "PubkeyAuthentication yes\n"
            "AuthorizedKeysFile .ssh/authorized_keys\n"
            "PrintMotd no\n"
            "PrintLastLog no\n"
            "X11Forwarding no\n"
            "AllowTcpForwarding no\n"
            "AllowAgentForwarding no\n"
            "PermitTunnel no\n"
            # The orchestrator's tests may open many sessions at once; real routers allow ~5.
            "MaxStartups 30:30:100\n"
            "MaxSessions 10\n"
            "LogLevel VERBOSE\n"
        )

    # --- processes ---------------------------------------------------------------------------

    def _in_router(self, router: str, argv: list[str]) -> list[str]:
        anchor = self._anchors.get(router)
        if anchor is None:
            raise FrrLabError(f"{router} is not running")
        return ["nsenter", "-t", str(anchor.pid), "-n", "-m", "-u", *argv]

    def _start_anchors(self) -> None:
        """One process per router holding its own mount + UTS namespace inside its netns."""
        for router in ROUTERS:
            argv = ["ip", "netns", "exec", self.netns(router)]
            argv += ["unshare", "--mount", "--uts", "--propagation", "private", "sleep", "infinity"]
            self._anchors[router] = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
        own_mnt = os.stat("/proc/self/ns/mnt").st_ino
        deadline = time.monotonic() + 10
        for router, proc in self._anchors.items():
            # ip and unshare exec in place, so the pid becomes `sleep` once the namespaces exist.
            while True:
                if proc.poll() is not None:
                    raise FrrLabError(f"{router}: namespace anchor exited ({proc.returncode})")
                with contextlib.suppress(OSError):
                    comm = Path(f"/proc/{proc.pid}/comm").read_text().strip()
                    if comm == "sleep" and os.stat(f"/proc/{proc.pid}/ns/mnt").st_ino != own_mnt:
                        break
                if time.monotonic() > deadline:
                    raise FrrLabError(f"{router}: namespace anchor never came up")
                time.sleep(0.005)

    def _start_frr(self) -> None:
        procs = {}
        for router in ROUTERS:
            d = self._router_dir(router)
            script = "\n".join(
                [
                    "set -e",
                    f"hostname {router}",
                    f"mount --bind {d / 'etc-frr'} /etc/frr",
                    f"mount --bind {d / 'run'} /run",
                    f"mount --bind {d / 'log'} /var/log",
                    *(f"mount --bind {d / 'etc' / f} /etc/{f}" for f in _ACCOUNT_FILES),
                    "echo 1 > /proc/sys/net/ipv4/ip_forward",
                    f"{_FRR_DIR / 'frrinit.sh'} start",
                ]
            )
            procs[router] = subprocess.Popen(
                self._in_router(router, ["sh", "-c", script]),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        for router, proc in procs.items():
            try:
                out, _ = proc.communicate(timeout=_UP_TIMEOUT_S)
            except subprocess.TimeoutExpired as e:
                proc.kill()
                raise FrrLabError(f"{router}: FRR did not start in {_UP_TIMEOUT_S}s") from e
            (self._router_dir(router) / "frrinit.log").write_text(out)
            if proc.returncode != 0:
                raise FrrLabError(f"{router}: FRR start failed: {out[-800:]}")

    def _start_sshd(self) -> None:
        for router in ROUTERS:
            d = self._router_dir(router)
            log = (d / "sshd.log").open("wb")
            argv = [str(_SSHD), "-D", "-e", "-f", str(d / "sshd_config")]
            self._sshd[router] = subprocess.Popen(
                self._in_router(router, argv), stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
            log.close()

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + _UP_TIMEOUT_S
        pending = set(ROUTERS)
        while pending:
            for router in sorted(pending):
                sshd = self._sshd[router]
                if sshd.poll() is not None:
                    log = (self._router_dir(router) / "sshd.log").read_text()
                    raise FrrLabError(f"{router}: sshd exited ({sshd.returncode}): {log[-800:]}")
                if self._sshd_answers(router) and self._routes_installed(router):
                    pending.discard(router)
            if pending and time.monotonic() > deadline:
                raise FrrLabError(f"routers not ready after {_UP_TIMEOUT_S}s: {sorted(pending)}")
            if pending:
                time.sleep(0.05)

    def _sshd_answers(self, router: str) -> bool:
        try:
            with socket.create_connection((self.mgmt_address(router), 22), timeout=1) as s:
                return s.recv(64).startswith(b"SSH-2.0-")
        except OSError:
            return False

    def _routes_installed(self, router: str) -> bool:
        proc = _run(
            self._in_router(router, [str(_VTYSH), "-c", "show ip route static"]), check=False
        )
        if proc.returncode != 0:
            return False
        return all(
            re.search(rf"^S>\* {re.escape(prefix)} .*via {re.escape(nh)}\b", proc.stdout, re.M)
            for prefix, nh in _STATIC_ROUTES[router]
        )

    def _stop_processes(self) -> None:
        for proc in self._sshd.values():
            if proc.poll() is None:
                proc.terminate()
        # watchfrr first, so it does not restart the daemons it sees dying.
        frr_pids: list[int] = []
        for router in ROUTERS:
            for name in ("watchfrr", "zebra", "staticd"):
                pid_file = self._router_dir(router) / "run" / "frr" / f"{name}.pid"
                with contextlib.suppress(OSError, ValueError):
                    pid = int(pid_file.read_text().strip())
                    if self._pid_in_lab(pid):
                        frr_pids.append(pid)
        for pid in frr_pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + _STOP_GRACE_S
        while any(_alive(p) for p in frr_pids) and time.monotonic() < deadline:
            time.sleep(0.02)
        for proc in self._sshd.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        # Whatever still runs in the lab's namespaces (sessions, stragglers, the anchors).
        for ns in list(self._created_netns):
            listed = _run(["ip", "netns", "pids", ns], check=False).stdout.split()
            for pid in (int(p) for p in listed if p.isdigit()):
                if self._pid_in_lab(pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
        for proc in [*self._sshd.values(), *self._anchors.values()]:
            if proc.poll() is None:
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=_STOP_GRACE_S)
        self._sshd.clear()
        self._anchors.clear()

    def _pid_in_lab(self, pid: int) -> bool:
        """Only ever signal a process whose network namespace is one of this lab's."""
        try:
            ino = os.stat(f"/proc/{pid}/ns/net").st_ino
        except OSError:
            return False
        for ns in self._created_netns:
            with contextlib.suppress(OSError):
                if os.stat(f"/run/netns/{ns}").st_ino == ino:
                    return True
        return False

    # --- helpers -----------------------------------------------------------------------------

    def _link(self, a: str, b: str) -> _Link:
        for link in _LINKS:
            if {link.a, link.b} == {a, b}:
                return link
        raise FrrLabError(f"no link between {a} and {b}")

    def _address_owners(self) -> dict[str, str]:
        owners = {}
        for link in _LINKS:
            owners[link.a_addr.split("/")[0]] = link.a
            owners[link.b_addr.split("/")[0]] = link.b
        return owners

    def _check_lab_address(self, ip: str) -> None:
        """Traffic goes only to addresses inside the lab's own namespaces."""
        if ip not in self._address_owners():
            raise FrrLabError(f"{ip} is not an address inside this lab")

    def _make_inventory(self) -> Inventory:
        area = "lab-district"

        def path(router: str) -> CircuitPath:
            prefix, backup = _BACKUP[router]
            return CircuitPath(
                device=router,
                prefix=prefix,
                primary=NextHop(address=self.primary_next_hop(router)),
                backup=NextHop(address=backup),
            )

        return Inventory(
            province="FRR lab",
            areas=[Area(id=area, name="Lab district")],
            devices=[
                Device(
                    name=router,
                    platform=Platform.FRR,
                    host=self.mgmt_address(router),
                    port=22,
                    site="frr-lab",
                    credential=CREDENTIAL_NAME,
                )
                for router in ROUTERS
            ],
            circuits=[
                Circuit(
                    id=CIRCUIT_ID,
                    name="Command HQ link",
                    owner="Provincial Military Command",
                    priority_class=PriorityClass.ARMED_FORCES,
                    restoration_level=1,
                    area=area,
                    paths=[path("r1"), path("r2")],
                )
            ],
            duty_officers=[
                DutyOfficer(
                    id="duty-lab",
                    name="Lab Duty Officer",
                    phone="+84900000001",
                    language=Language.VI,
                    escalation_order=1,
                )
            ],
            operators=[Operator(id="op-lab", name="Lab Operator")],
        )


_ACCOUNT_FILES = ("passwd", "group", "shadow", "gshadow")

# zebra and staticd always run (frrcommon.sh forces them); nothing else is needed for static routes.
_DAEMONS = """\
vtysh_enable=yes
zebra_options="  -A 127.0.0.1 -s 90000000"
staticd_options="-A 127.0.0.1"
"""


# Debian's vtysh asks PAM about non-root users and prints a failure banner on every login;
# `nopassword` is FRR's documented way to leave authentication to the login (sshd) alone.
_VTYSH_CONF = f"""\
service integrated-vtysh-config
username {USERNAME} nopassword
"""


def _frr_conf(router: str) -> str:
    routes = "".join(f"ip route {prefix} {nh}\n" for prefix, nh in _STATIC_ROUTES[router])
    return (
        "frr version 8.4.4\n"
        "frr defaults traditional\n"
        f"hostname {router}\n"
        "log file /var/log/frr/frr.log informational\n"
        "service integrated-vtysh-config\n"
        "!\n"
        f"{routes}"
        "!\n"
        "end\n"
    )


def _ids(name: str) -> tuple[int, int]:
    entry = pwd.getpwnam(name)
    return entry.pw_uid, entry.pw_gid


def _alive(pid: int) -> bool:
    """Running, and not a zombie waiting for whoever adopted the daemon to reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


__all__ = [
    "CIRCUIT_ID",
    "COMMAND_HQ",
    "CREDENTIAL_NAME",
    "HOSTS",
    "PRIORITY_USERS",
    "ROUTERS",
    "USERNAME",
    "FrrLab",
    "FrrLabError",
    "frr_lab_available",
]
