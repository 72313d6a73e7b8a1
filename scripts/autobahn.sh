#!/usr/bin/env bash
# Run the Autobahn WebSocket conformance cases against wsbeat, using kosoku
# (a Rust re-implementation of the Autobahn fuzzingclient, from PyPI).
#
# Usage: scripts/autobahn.sh
#   WSBEAT_BIN=path        use this server binary instead of `cargo build --release`
#   AUTOBAHN_CASES="..."   extra kosoku args, e.g. "-i 6.4.* -i 7.7.1" (disables
#                          the expected-case-count check)
#   AUTOBAHN_TIMEOUT=secs  overall limit for the kosoku run (default 600). kosoku
#                          has no per-case timeout of its own: a server that never
#                          answers a close frame or the opening handshake hangs it.
#   AUTOBAHN_TLS=1         the same cases over wss://: the server gets a fresh
#                          self-signed certificate (openssl) and kosoku, which has
#                          no TLS, goes through scripts/autobahn-tls-bridge.py, a
#                          local relay that speaks verified TLS to the server.
#
# Output: target/autobahn-report/ (target/autobahn-report-tls/ with AUTOBAHN_TLS=1:
# index.html, index.json, one json+html per case, kosoku.log, server.log, and
# bridge.log and the certificate for TLS). Exits non-zero if any case is not OK/INFORMATIONAL
# (FAILED, NON-STRICT, UNIMPLEMENTED, ERROR, or a non-OK closing verdict), if the
# case count is wrong, if kosoku fails or times out, or if the server (or the
# bridge) dies.
set -euo pipefail

KOSOKU_VERSION=0.1.0
# kosoku 0.1.0 runs 301 cases for groups 1-7, 9, 10 (everything but 12.*/13.*).
EXPECTED_CASES=301
AUTOBAHN_TIMEOUT="${AUTOBAHN_TIMEOUT:-600}"
PORT_WAIT_SECS=30
TLS=0
case "${AUTOBAHN_TLS:-0}" in
    0 | "") ;;
    1) TLS=1 ;;
    *) echo "autobahn: error: AUTOBAHN_TLS=${AUTOBAHN_TLS} (expected 1 or 0)" >&2; exit 1 ;;
esac

die() { echo "autobahn: error: $*" >&2; exit 1; }

# Resolve WSBEAT_BIN relative to the caller's directory before we cd.
BIN=""
if [[ -n "${WSBEAT_BIN:-}" ]]; then
    if [[ "$WSBEAT_BIN" == */* ]]; then
        BIN="$(cd "$(dirname "$WSBEAT_BIN")" && pwd)/$(basename "$WSBEAT_BIN")"
    else
        BIN="$(command -v "$WSBEAT_BIN" || true)"
    fi
    [[ -n "$BIN" && -x "$BIN" ]] || die "WSBEAT_BIN=$WSBEAT_BIN is not an executable"
fi

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="$ROOT/target/autobahn-venv"
REPORT_DIR="$ROOT/target/autobahn-report"
((TLS)) && REPORT_DIR="$ROOT/target/autobahn-report-tls"
((TLS)) && { command -v openssl >/dev/null || die "AUTOBAHN_TLS=1 needs the openssl command (Debian package openssl)"; }

# --- 1. Python venv with a pinned kosoku (reused if already set up) ---------
python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
    || die "kosoku needs python3 >= 3.10 (found $(python3 --version 2>&1))"
if ! "$VENV/bin/python" -c '' 2>/dev/null; then
    echo "autobahn: creating venv $VENV"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
fi
installed="$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("kosoku"))' 2>/dev/null || true)"
if [[ "$installed" != "$KOSOKU_VERSION" ]]; then
    echo "autobahn: installing kosoku==$KOSOKU_VERSION"
    "$VENV/bin/python" -m pip install --disable-pip-version-check -q "kosoku==$KOSOKU_VERSION"
fi

# --- 2. Server binary --------------------------------------------------------
if [[ -z "$BIN" ]]; then
    cargo build --release
    BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/wsbeat"
    [[ -x "$BIN" ]] || die "cargo build did not produce $BIN"
fi

# --- 3. Start the server on a free loopback port -----------------------------
rm -rf "$REPORT_DIR"
mkdir -p "$REPORT_DIR"
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}
PORT="$(free_port)"

SERVER_PID=""
BRIDGE_PID=""
alive() {
    # kill -0 also succeeds on a not-yet-reaped zombie, so check the state too.
    [[ -n "$1" ]] && kill -0 "$1" 2>/dev/null || return 1
    if [[ -r "/proc/$1/stat" ]]; then
        local stat
        stat="$(<"/proc/$1/stat")" || return 1
        stat="${stat##*) }"
        [[ "${stat%% *}" != Z ]]
    fi
}
server_alive() { alive "$SERVER_PID"; }
# shellcheck disable=SC2317,SC2329  # invoked via cleanup, via trap
stop() {
    [[ -n "$1" ]] || return 0
    if alive "$1"; then
        kill "$1" 2>/dev/null || true
        for _ in $(seq 50); do alive "$1" || break; sleep 0.1; done
        alive "$1" && kill -9 "$1" 2>/dev/null
    fi
    wait "$1" 2>/dev/null || true
}
# shellcheck disable=SC2317,SC2329  # invoked via trap
cleanup() {
    stop "$BRIDGE_PID"
    stop "$SERVER_PID"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

SERVER_ARGS=(--listen "127.0.0.1:$PORT" --admin-listen 127.0.0.1:0 --echo --max-message-size 16MiB)
if ((TLS)); then
    # A certificate for this run only, trusted by the bridge and nothing else.
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
        -subj /CN=localhost -addext subjectAltName=DNS:localhost \
        -keyout "$REPORT_DIR/key.pem" -out "$REPORT_DIR/cert.pem" 2>"$REPORT_DIR/openssl.log" \
        || { cat "$REPORT_DIR/openssl.log" >&2; die "openssl could not make a certificate"; }
    SERVER_ARGS+=(--tls-cert "$REPORT_DIR/cert.pem" --tls-key "$REPORT_DIR/key.pem")
fi

scheme=ws
((TLS)) && scheme=wss
echo "autobahn: starting $BIN on $scheme://127.0.0.1:$PORT"
"$BIN" "${SERVER_ARGS[@]}" >"$REPORT_DIR/server.log" 2>&1 &
SERVER_PID=$!

# Report a dead server (reaping it for its exit status).
report_server_death() {
    local status=0
    wait "$SERVER_PID" 2>/dev/null || status=$?
    SERVER_PID=""
    echo "autobahn: error: server exited unexpectedly (status $status); last lines of server.log:" >&2
    tail -n 20 "$REPORT_DIR/server.log" >&2 || true
}

deadline=$((SECONDS + PORT_WAIT_SECS))
until (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; do
    server_alive || { report_server_death; exit 1; }
    ((SECONDS < deadline)) || die "server did not accept connections on 127.0.0.1:$PORT within ${PORT_WAIT_SECS}s"
    sleep 0.2
done

# kosoku's address: the server, or the bridge to it.
TARGET_PORT="$PORT"
if ((TLS)); then
    TARGET_PORT="$(free_port)"
    "$VENV/bin/python" "$ROOT/scripts/autobahn-tls-bridge.py" "$TARGET_PORT" "$PORT" "$REPORT_DIR/cert.pem" \
        >"$REPORT_DIR/bridge.log" 2>&1 &
    BRIDGE_PID=$!
    echo "autobahn: TLS bridge on 127.0.0.1:$TARGET_PORT -> wss://localhost:$PORT"
    # It says when it listens; probing its port would open a TLS connection.
    deadline=$((SECONDS + PORT_WAIT_SECS))
    until grep -q "^autobahn-tls-bridge: 127.0.0.1:$TARGET_PORT " "$REPORT_DIR/bridge.log"; do
        alive "$BRIDGE_PID" || { cat "$REPORT_DIR/bridge.log" >&2; die "the TLS bridge exited"; }
        ((SECONDS < deadline)) || die "the TLS bridge did not listen within ${PORT_WAIT_SECS}s"
        sleep 0.2
    done
fi

# --- 4. Run kosoku ------------------------------------------------------------
EXTRA=()
read -r -a EXTRA <<<"${AUTOBAHN_CASES:-}"   # word-split, no globbing
KOSOKU=("$VENV/bin/kosoku" -m fuzzingclient -x '12.*' -x '13.*' -o "$REPORT_DIR"
        ${EXTRA[@]+"${EXTRA[@]}"} "127.0.0.1:$TARGET_PORT")
echo "autobahn: running ${KOSOKU[*]#"$VENV/bin/"}"
start=$SECONDS
set +e
# --foreground keeps kosoku in our process group so Ctrl-C reaches it.
timeout --foreground -k 10 "$AUTOBAHN_TIMEOUT" "${KOSOKU[@]}" >"$REPORT_DIR/kosoku.log" 2>&1
krc=$?
set -e
echo "autobahn: kosoku finished in $((SECONDS - start))s (exit $krc)"

# A server that died mid-run fails the run, but still show what the report says.
server_dead=0
server_alive || { report_server_death; server_dead=1; }
# A failed TLS connection fails its case; the bridge's log says why.
if ((TLS)) && grep -q 'failed' "$REPORT_DIR/bridge.log"; then
    echo "autobahn: the TLS bridge reports failures; first lines of bridge.log:" >&2
    grep 'failed' "$REPORT_DIR/bridge.log" | head -n 5 >&2
fi
bridge_dead=0
if ((TLS)) && ! alive "$BRIDGE_PID"; then
    echo "autobahn: error: the TLS bridge died during the run; bridge.log:" >&2
    tail -n 20 "$REPORT_DIR/bridge.log" >&2 || true
    bridge_dead=1
fi
((krc == 130)) && die "interrupted"
if ((krc == 124 || krc == 137)); then
    die "kosoku did not finish within ${AUTOBAHN_TIMEOUT}s; a case probably hung (kosoku waits forever for a close reply or a handshake response). Narrow it down with AUTOBAHN_CASES."
fi
# kosoku exits 1 both when cases fail (report written) and when it crashes.
if ((krc != 0 && krc != 1)) || [[ ! -f "$REPORT_DIR/index.json" ]]; then
    echo "autobahn: error: kosoku failed (exit $krc); last lines of kosoku.log:" >&2
    tail -n 30 "$REPORT_DIR/kosoku.log" >&2 || true
    exit 1
fi

# --- 5. Summarise the report -------------------------------------------------
expected="$EXPECTED_CASES"
[[ -n "${AUTOBAHN_CASES:-}" ]] && expected=""   # custom selection: no count check
set +e
"$VENV/bin/python" - "$REPORT_DIR" "$krc" "$expected" "$server_dead" "$bridge_dead" <<'PY'
import collections, json, os, sys

report_dir, kosoku_rc, expected = sys.argv[1], int(sys.argv[2]), sys.argv[3]
server_dead, bridge_dead = sys.argv[4] == "1", sys.argv[5] == "1"
with open(os.path.join(report_dir, "index.json")) as f:
    index = json.load(f)

# index.json is {agent: {case_id: entry}}. The agent is the server's `Server`
# header, or host:port for cases that errored before the handshake, so merge.
cases = {}
dupes = []
for agent_cases in index.values():
    for cid, entry in agent_cases.items():
        if cid in cases:
            dupes.append(cid)
        cases[cid] = entry

def key(cid):
    return [int(p) for p in cid.split(".")]

GOOD = {"OK", "INFORMATIONAL"}
beh = collections.Counter(e["behavior"] for e in cases.values())
close = collections.Counter(e["behaviorClose"] for e in cases.values())
fmt = lambda c: ", ".join(f"{k} {v}" for k, v in sorted(c.items(), key=lambda kv: -kv[1]))

print()
print(f"autobahn: {len(cases)} cases run" + (f" (expected {expected})" if expected else ""))
print(f"  behavior:      {fmt(beh)}")
print(f"  behaviorClose: {fmt(close)}")

bad = [c for c in sorted(cases, key=key)
       if cases[c]["behavior"] not in GOOD or cases[c]["behaviorClose"] not in GOOD]
# kosoku itself passes a case when behavior is OK/NON-STRICT/INFORMATIONAL
# and behaviorClose is OK/INFORMATIONAL; its exit code should agree.
kosoku_fails = [c for c in cases
                if cases[c]["behavior"] not in GOOD | {"NON-STRICT"}
                or cases[c]["behaviorClose"] not in GOOD]

if bad:
    print(f"\nCases not OK/INFORMATIONAL ({len(bad)}):")
    for cid in bad:
        e = cases[cid]
        detail = {}
        try:
            with open(os.path.join(report_dir, e["reportfile"])) as f:
                detail = json.load(f)
        except (OSError, ValueError, KeyError):
            pass
        why = detail.get("result", "")
        if e["behaviorClose"] not in GOOD:
            why += f" / {detail.get('resultClose', '')}"
        print(f"  {cid:<8} {e['behavior']:<13} close={e['behaviorClose']:<16} "
              f"code={e['remoteCloseCode']!s:<5} {e['duration']:>6}ms  {why}")

problems = []
if server_dead:
    problems.append("the server died during the run")
if bridge_dead:
    problems.append("the TLS bridge died during the run")
if bad:
    problems.append(f"{len(bad)} case(s) not OK/INFORMATIONAL")
if expected and len(cases) != int(expected):
    problems.append(f"ran {len(cases)} cases, expected {expected}")
if dupes:
    problems.append(f"duplicate results for {', '.join(sorted(set(dupes), key=key))}")
if (kosoku_rc != 0) != bool(kosoku_fails):
    problems.append(f"kosoku exit code {kosoku_rc} disagrees with its report "
                    f"({len(kosoku_fails)} failing case(s)); see kosoku.log")

print(f"\nReport: {os.path.join(report_dir, 'index.html')}")
print(f"autobahn: {len(cases) - len(bad)} passed, {len(bad)} failed")
if problems:
    print("autobahn: FAIL: " + "; ".join(problems))
    sys.exit(1)
print("autobahn: PASS")
PY
summary_rc=$?
set -e
exit "$summary_rc"
