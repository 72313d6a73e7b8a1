#!/usr/bin/env bash
# Installs what the test suite needs when it is missing: redis-server (the
# Debian package), which the cluster tests start themselves, one instance per
# test on a free loopback port. Idempotent; one line of output when all is there.
set -euo pipefail

die() { echo "install-test-deps: error: $*" >&2; exit 1; }
found() { echo "install-test-deps: $1 $(command -v redis-server) ($(redis-server --version | sed -n 's/.* v=\([^ ]*\).*/\1/p'))"; }

as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        die "need root or sudo to run: $*"
    fi
}

if command -v redis-server >/dev/null; then
    found found
    exit 0
fi

command -v apt-get >/dev/null || die "redis-server is missing and there is no apt-get: install redis-server yourself"
echo "install-test-deps: redis-server missing, installing the Debian package"
as_root apt-get update -q
as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server

# The package's postinstall may have started redis as a system service. The
# tests never use it, so stop it and keep it off at boot; there may be no
# service manager at all (containers), which is fine.
if command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
    as_root systemctl disable --now redis-server >/dev/null 2>&1 || true
fi
if command -v service >/dev/null; then
    as_root service redis-server stop >/dev/null 2>&1 || true
fi
if command -v update-rc.d >/dev/null; then
    as_root update-rc.d redis-server disable >/dev/null 2>&1 || true
fi

command -v redis-server >/dev/null || die "redis-server is still not on PATH after installing it"
found installed
