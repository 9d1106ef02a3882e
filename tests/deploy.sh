#!/usr/bin/env bash
# The proxy configurations of docs/deploy.md, run for real in front of `duplex serve`.
#
#   tests/deploy.sh [nginx] [haproxy]      (no argument: both)
#
# docs/deploy/nginx.conf and docs/deploy/haproxy.cfg are the files docs/deploy.md shows (checked
# here: each must appear in it verbatim). Each runs with only its ports changed (80 -> a free
# port, 127.0.0.1:9001 -> the server's free port), nginx under a prefix in a temporary directory
# (`daemon off`, logs there), HAProxy with `-f FILE -db` (and `-n 1000`, see start_haproxy). Through each proxy:
#   - curl: GET /healthz is `ok`, GET / is the demo page;
#   - two `duplex connect -s duplex.v1` clients over ws:// on the proxy's port: ben joins a room
#     and stays connected while the server pings every 500 ms; ann says hello, joins, publishes
#     and must get welcome, joined, ack and her own message; ben must get ann's join and message.
# nginx, haproxy and curl are installed with apt when missing and we are root; otherwise the
# script fails saying what to install.
set -euo pipefail
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/lib.sh"

WAIT=20 # seconds, for each server to listen and each client to finish
PROXIES=("$@")
((${#PROXIES[@]})) || PROXIES=(nginx haproxy)

TMP=$(mktemp -d)
trap 'cleanup_bg; rm -rf "$TMP"' EXIT

ensure_tools() {
    local missing=() tool
    for tool in nginx haproxy curl; do
        command -v "$tool" >/dev/null || [[ -x /usr/sbin/$tool ]] || missing+=("$tool")
    done
    ((${#missing[@]})) || return 0
    if [[ $(id -u) != 0 ]] || ! command -v apt-get >/dev/null; then
        die "missing ${missing[*]}: install them (Debian: sudo apt-get install ${missing[*]}) and run again"
    fi
    log "installing ${missing[*]} with apt-get"
    # Install without starting the packages' own services (they would take port 80).
    local policy=/usr/sbin/policy-rc.d added=
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        added=1
    fi
    local rc=0
    {
        DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    } || rc=$?
    [[ -z $added ]] || rm -f "$policy"
    ((rc == 0)) || die "apt-get install ${missing[*]} failed (exit $rc)"
}

# The docs must show the very files tested here.
check_doc_includes() {
    local file
    for file in docs/deploy/nginx.conf docs/deploy/haproxy.cfg; do
        python3 - "$file" <<'EOF' || die "docs/deploy.md does not include $file verbatim"
import sys
doc = open("docs/deploy.md").read()
sys.exit(0 if open(sys.argv[1]).read() in doc else 1)
EOF
    done
}

# The idle timeouts of an upgraded connection must outlast the server's ping interval (the
# default --heartbeat-ms, 30 s) with a margin; the traffic test pings faster, so check the
# values themselves: at least 60 s.
check_idle_timeouts() {
    python3 - <<'EOF' || die "an idle timeout in docs/deploy/ is unset or under 60 s (the server pings every 30 s)"
import re, sys
UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
def seconds(text, bare):
    n, unit = re.fullmatch(r"(\d+)(ms|s|m|h|d|)", text).groups()
    return int(n) * (UNITS[unit] if unit else bare)
nginx = open("docs/deploy/nginx.conf").read()
haproxy = open("docs/deploy/haproxy.cfg").read()
# nginx reads a bare number as seconds, HAProxy as milliseconds.
checks = [
    ("nginx proxy_read_timeout", nginx, r"proxy_read_timeout\s+(\w+);", 1),
    ("nginx proxy_send_timeout", nginx, r"proxy_send_timeout\s+(\w+);", 1),
    ("haproxy timeout tunnel", haproxy, r"timeout tunnel\s+(\w+)", 0.001),
]
for name, text, pattern, bare in checks:
    m = re.search(pattern, text)
    if not m:
        sys.exit(f"{name} is not set")
    if seconds(m.group(1), bare) < 60:
        sys.exit(f"{name} is {m.group(1)}")
EOF
}

# substitute FILE OUT PROXY_PORT SERVER_PORT: FILE with its two ports replaced; fails if either
# is absent, so a changed config cannot silently skip the substitution.
substitute() {
    local file=$1 out=$2 proxy_port=$3 server_port=$4
    grep -q '127\.0\.0\.1:9001' "$file" || die "$file: no 127.0.0.1:9001 to point at the test server"
    grep -Eq '^\s*(listen 80;|bind :80)$' "$file" || die "$file: no 'listen 80;' or 'bind :80' to move"
    sed -e "s/127\.0\.0\.1:9001/127.0.0.1:$server_port/" \
        -e "s/^\(\s*\)listen 80;$/\1listen 127.0.0.1:$proxy_port;/" \
        -e "s/^\(\s*\)bind :80$/\1bind 127.0.0.1:$proxy_port/" "$file" >"$out"
}

start_nginx() {
    local port=$1 server_port=$2 dir="$TMP/nginx"
    mkdir -p "$dir/conf.d" "$dir/logs" "$dir/tmp"
    substitute docs/deploy/nginx.conf "$dir/conf.d/duplex.conf" "$port" "$server_port"
    # The main file a distribution ships, reduced to what a prefix in a temporary directory needs.
    cat >"$dir/nginx.conf" <<EOF
daemon off;
pid $dir/nginx.pid;
error_log $dir/logs/error.log info;
events { worker_connections 1024; }
http {
    access_log $dir/logs/access.log;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    include $dir/conf.d/duplex.conf;
}
EOF
    local nginx
    nginx=$(command -v nginx || echo /usr/sbin/nginx)
    "$nginx" -t -q -p "$dir" -e "$dir/logs/error.log" -c "$dir/nginx.conf" ||
        die "nginx -t refused docs/deploy/nginx.conf"
    start_server "$TMP/nginx.log" "$port" "$WAIT" nginx \
        "$nginx" -p "$dir" -e "$dir/logs/error.log" -c "$dir/nginx.conf"
}

start_haproxy() {
    local port=$1 server_port=$2 cfg="$TMP/haproxy.cfg"
    substitute docs/deploy/haproxy.cfg "$cfg" "$port" "$server_port"
    local haproxy
    haproxy=$(command -v haproxy || echo /usr/sbin/haproxy)
    "$haproxy" -c -q -f "$cfg" || die "haproxy -c refused docs/deploy/haproxy.cfg"
    # `-n` caps the production maxconn: HAProxy refuses to start when it cannot raise its file
    # limit to match, and a test machine's hard limit may be lower.
    start_server "$TMP/haproxy.log" "$port" "$WAIT" haproxy "$haproxy" -n 1000 -f "$cfg" -db
}

# wait_for_line FILE PATTERN PID: until FILE has a line matching PATTERN (grep -E), bounded;
# fails early if PID has exited.
wait_for_line() {
    local file=$1 pattern=$2 pid=$3 deadline=$((SECONDS + WAIT))
    until grep -Eq "$pattern" "$file" 2>/dev/null; do
        kill -0 "$pid" 2>/dev/null || return 1
        ((SECONDS < deadline)) || return 1
        sleep 0.1
    done
}

check_through() {
    local name=$1 port=$2 base="http://127.0.0.1:$2" ws="ws://127.0.0.1:$2/ws" body
    body=$(curl -fsS --max-time "$WAIT" "$base/healthz") || die "$name: GET /healthz failed"
    [[ $body == ok ]] || die "$name: GET /healthz answered '$body'"
    body=$(curl -fsS --max-time "$WAIT" "$base/") || die "$name: GET / failed"
    [[ $body == *"<title>Duplex chat</title>"* ]] || die "$name: GET / is not the demo page"

    # Client ids per proxy: a publish id already used by a client id is deduplicated (ack, no
    # second message) across connections.
    local room="app/deploy-$name" ben_out="$TMP/$name-ben.out" ann_out="$TMP/$name-ann.out"
    # ben stays connected for a few seconds (several server pings pass through the proxy).
    start_bg "$ben_out" bash -c '
        { printf "%s\n" "{\"type\":\"hello\",\"client\":\"ben-$3\"}" \
              "{\"type\":\"join\",\"id\":1,\"room\":\"$1\"}"; sleep 3; } |
            "$0" connect -s duplex.v1 --wait 1 "$2"' "$DUPLEX_BIN" "$room" "$ws" "$name"
    local ben=$BG_PID
    wait_for_line "$ben_out" '"type":"joined"' "$ben" || {
        show_log "$ben_out"
        die "$name: ben did not join through the proxy"
    }
    printf '%s\n' "{\"type\":\"hello\",\"client\":\"ann-$name\"}" \
        "{\"type\":\"join\",\"id\":1,\"room\":\"$room\"}" \
        "{\"type\":\"publish\",\"id\":2,\"room\":\"$room\",\"data\":{\"text\":\"via $name\"}}" |
        timeout "$WAIT" "$DUPLEX_BIN" connect -s duplex.v1 "$ws" >"$ann_out" 2>&1 || {
        show_log "$ann_out"
        die "$name: ann's duplex connect failed"
    }
    local want
    for want in "\"type\":\"welcome\",\"client\":\"ann-$name\"" '"type":"joined","id":1' '"type":"ack","id":2' \
        "\"type\":\"message\",\"room\":\"$room\",\"seq\":1,\"from\":\"ann-$name\",\"data\":{\"text\":\"via $name\"}"; do
        grep -qF "$want" "$ann_out" || {
            show_log "$ann_out"
            die "$name: ann did not get $want"
        }
    done
    local rc=0
    wait_pid "$ben" "$WAIT" || rc=$?
    ((rc == 0)) || {
        show_log "$ben_out"
        die "$name: ben's duplex connect exited $rc"
    }
    for want in "\"type\":\"join\",\"room\":\"$room\",\"client\":\"ann-$name\"" \
        "\"type\":\"message\",\"room\":\"$room\",\"seq\":1,\"from\":\"ann-$name\""; do
        grep -qF "$want" "$ben_out" || {
            show_log "$ben_out"
            die "$name: ben did not get $want"
        }
    done
    log "$name: /healthz, /, and duplex.v1 between two clients pass through docs/deploy/${3}"
}

main() {
    [[ -x $DUPLEX_BIN ]] || die "$DUPLEX_BIN not built (cargo build --release -p duplex)"
    ensure_tools
    check_doc_includes
    check_idle_timeouts
    local server_port proxy proxy_port proxy_pid
    server_port=$(free_port)
    start_server "$TMP/serve.log" "$server_port" "$WAIT" "duplex serve" \
        "$DUPLEX_BIN" serve --listen "127.0.0.1:$server_port" --threads 1 --heartbeat-ms 500
    for proxy in "${PROXIES[@]}"; do
        proxy_port=$(free_port)
        case $proxy in
        nginx)
            start_nginx "$proxy_port" "$server_port"
            proxy_pid=$BG_PID
            check_through nginx "$proxy_port" nginx.conf
            ;;
        haproxy)
            start_haproxy "$proxy_port" "$server_port"
            proxy_pid=$BG_PID
            check_through haproxy "$proxy_port" haproxy.cfg
            ;;
        *) die "unknown proxy '$proxy' (nginx, haproxy)" ;;
        esac
        stop_pid "$proxy_pid"
    done
    log "${#PROXIES[@]} proxies ok"
}

main
