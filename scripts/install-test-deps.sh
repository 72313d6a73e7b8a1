#!/usr/bin/env bash
# Installs what the test suite needs when it is missing:
# - redis-server (the Debian package), which the cluster tests start
#   themselves, one instance per test on a free loopback port;
# - chromium (the Debian package), which the browser test drives headless;
# - systemd-analyze (the Debian package systemd) and /bin/kill (procps),
#   with which tests/deploy.rs verifies deploy/wsbeat.service;
# - tests/browser/node_modules (`npm ci` from its package-lock.json: the
#   pinned playwright-core that drives chromium), needing node >= 20 and npm.
# Idempotent; one line of output per dependency when all is there.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

die() { echo "install-test-deps: error: $*" >&2; exit 1; }

as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        die "need root or sudo to run: $*"
    fi
}

# The browser test runs this path (tests/browser_tls.rs), so look for the
# file, not for any `chromium` on PATH.
CHROMIUM=/usr/bin/chromium

redis_line() { echo "install-test-deps: $1 redis-server $(command -v redis-server) ($(redis-server --version | sed -n 's/.* v=\([^ ]*\).*/\1/p'))"; }
systemd_line() { echo "install-test-deps: $1 systemd-analyze $(command -v systemd-analyze) ($(systemd-analyze --version | head -n 1))"; }
chromium_line() { echo "install-test-deps: $1 chromium $CHROMIUM ($("$CHROMIUM" --version 2>/dev/null | head -n 1))"; }

# --- Debian packages: one apt-get update for whatever is missing -------------
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
[[ -x "$CHROMIUM" ]] || missing+=(chromium)
command -v systemd-analyze >/dev/null || missing+=(systemd)
# The unit's ExecReload= runs it, so verify wants it there.
[[ -x /bin/kill ]] || missing+=(procps)
if ((${#missing[@]})); then
    command -v apt-get >/dev/null || die "${missing[*]} missing and there is no apt-get: install ${missing[*]} yourself"
    echo "install-test-deps: ${missing[*]} missing, installing the Debian package(s)"
    as_root apt-get update -q
fi

if [[ " ${missing[*]} " == *" redis-server "* ]]; then
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
    redis_line installed
else
    redis_line found
fi

if [[ " ${missing[*]} " == *" chromium "* ]]; then
    # Headless needs none of the recommends (a notification daemon, printer
    # settings, upower...).
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium
    [[ -x "$CHROMIUM" ]] || die "$CHROMIUM is still missing after installing the chromium package"
    chromium_line installed
else
    chromium_line found
fi

if [[ " ${missing[*]} " == *" systemd "* || " ${missing[*]} " == *" procps "* ]]; then
    # Only the tools: no recommends (dbus, timesyncd), and no systemd-sysv,
    # so the container's init is not replaced. The package starts nothing
    # where systemd is not running (no /run/systemd/system).
    pkgs=()
    [[ " ${missing[*]} " == *" systemd "* ]] && pkgs+=(systemd)
    [[ " ${missing[*]} " == *" procps "* ]] && pkgs+=(procps)
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${pkgs[@]}"
    command -v systemd-analyze >/dev/null || die "systemd-analyze is still not on PATH after installing the systemd package"
    [[ -x /bin/kill ]] || die "/bin/kill is still missing after installing the procps package"
    systemd_line installed
else
    systemd_line found
fi

# --- tests/browser/node_modules ------------------------------------------------
# `npm ci` when node_modules is missing or was installed from another
# package-lock.json: a stamp in node_modules holds the lock's hash (npm ci
# wipes node_modules first, so a stamp is only there after a complete install).
BROWSER=tests/browser
STAMP="$BROWSER/node_modules/.install-test-deps-lock.sha256"
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    die "node (>= 20) and npm are needed for $BROWSER (Debian: apt-get install nodejs npm, or nodejs.org)"
fi
node_major="$(node -p 'process.versions.node.split(".")[0]')"
((node_major >= 20)) || die "node >= 20 is needed for $BROWSER (playwright-core), found $(node --version)"
[[ -f "$BROWSER/package-lock.json" ]] || die "$BROWSER/package-lock.json is missing"

lock_hash="$(sha256sum "$BROWSER/package-lock.json" | cut -d' ' -f1)"
playwright_line() {
    echo "install-test-deps: $1 $BROWSER/node_modules (playwright-core $(node -p "require('./$BROWSER/node_modules/playwright-core/package.json').version"), node $(node --version))"
}
if [[ -f "$STAMP" && "$(<"$STAMP")" == "$lock_hash" ]]; then
    playwright_line found
else
    echo "install-test-deps: $BROWSER/node_modules missing or stale, running npm ci"
    # playwright-core downloads no browser; the variable makes sure of it.
    (cd "$BROWSER" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
    echo "$lock_hash" >"$STAMP"
    playwright_line installed
fi
