#!/usr/bin/env bash
# Installs the Debian 12 packages for the FRR netns lab and the browser tests (root; idempotent).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

packages=(
  frr frr-pythontools                 # real routers: zebra, staticd, watchfrr, vtysh, frr-reload.py
  openssh-server openssh-client       # one sshd per lab router, vtysh as the login shell
  iproute2 iputils-ping traceroute    # namespaces, veths, bridge; proving where traffic went
  util-linux openssl                  # unshare/nsenter; the lab user's password hash
  chromium                            # browser tests of the web console
)

if [ "$(id -u)" != "0" ]; then
  echo "install-system-deps.sh must run as root" >&2
  exit 1
fi

missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done
if [ "${#missing[@]}" -eq 0 ]; then
  echo "system packages already installed"
  exit 0
fi

# The lab runs its own frr and sshd inside namespaces; the packages' services must not start in
# the root namespace. Debian's maintainer scripts ask policy-rc.d first; 101 means "do not".
policy=/usr/sbin/policy-rc.d
backup=""
if [ -e "$policy" ]; then
  backup="$(mktemp)"
  cp -p "$policy" "$backup"
fi
restore_policy() {
  if [ -n "$backup" ]; then
    cp -p "$backup" "$policy" && rm -f "$backup"
  else
    rm -f "$policy"
  fi
}
trap restore_policy EXIT
printf '#!/bin/sh\nexit 101\n' > "$policy"
chmod 755 "$policy"

# Services that were already running are the machine's own: remember them and leave them be.
systemd_active=false
[ -d /run/systemd/system ] && systemd_active=true
was_active=()
if $systemd_active; then
  for unit in frr ssh; do
    systemctl is-active --quiet "$unit" 2>/dev/null && was_active+=("$unit")
  done
fi

apt-get update -q
apt-get install -y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
  "${missing[@]}"

# Belt and braces: stop a service this install started despite policy-rc.d.
if $systemd_active; then
  for unit in frr ssh; do
    if [[ " ${was_active[*]} " != *" $unit "* ]] && systemctl is-active --quiet "$unit" 2>/dev/null; then
      systemctl stop "$unit" || true
    fi
  done
fi

echo "installed: ${missing[*]}"
