#!/usr/bin/env bash
# Drive the echo_server example as a real process and shut it down with
# signals: echo_client against it, then SIGTERM with no connection open,
# with an idle connection past a short drain deadline, and with a second
# signal during a long drain. Each server must exit with status 0 and print
# what it did. Everything runs on 127.0.0.1, and every wait has a bound.
#
# Usage: echo_pair.sh ECHO_SERVER ECHO_CLIENT
set -u

server_bin=$1
client_bin=$2
work_dir=$(mktemp -d /tmp/echo_pair.XXXXXX) || exit 1
server_pid=
server_out=

cleanup() {
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill -KILL "$server_pid" 2>/dev/null
    fi
    exec 3>&-
    rm -rf "$work_dir"
}
trap cleanup EXIT

fail() {
    echo "FAIL: $*"
    if [ -n "$server_out" ] && [ -f "$server_out" ]; then
        echo "--- server output:"
        cat "$server_out"
    fi
    exit 1
}

# start_server NAME ARGS...: start echo_server in the background and set
# server_pid, server_out and port from its "listening on" line.
start_server() {
    local name=$1
    shift
    server_out=$work_dir/$name.server.out
    "$server_bin" "$@" >"$server_out" 2>&1 &
    server_pid=$!
    port=
    for _ in $(seq 100); do
        port=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9][0-9]*\)$/\1/p' "$server_out")
        [ -n "$port" ] && return 0
        kill -0 "$server_pid" 2>/dev/null || fail "$name: echo_server exited before listening"
        sleep 0.1
    done
    fail "$name: echo_server printed no port within 10 s"
}

# wait_for_line NAME PATTERN: wait up to 10 s for a line of server output.
wait_for_line() {
    for _ in $(seq 100); do
        grep -q "$2" "$server_out" && return 0
        sleep 0.1
    done
    fail "$1: no line matching '$2' within 10 s"
}

# stop_server NAME SECONDS: wait up to SECONDS for the server to exit by
# itself, and fail unless its status is 0.
stop_server() {
    local name=$1 limit=$2
    for _ in $(seq $((limit * 10))); do
        kill -0 "$server_pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$server_pid" 2>/dev/null && fail "$name: echo_server still runs $limit s after the signal"
    wait "$server_pid"
    local status=$?
    server_pid=
    # Shown in the test's output, where a sanitizer report fails the test.
    sed "s/^/$name server: /" "$server_out"
    [ "$status" -eq 0 ] || fail "$name: echo_server exited with status $status, expected 0"
}

expect_line() {
    grep -q "$2" "$server_out" || fail "$1: no line matching '$2'"
}

# open_idle_connection NAME: connect on fd 3 and check one echoed byte,
# so the server has accepted the connection before the signal.
open_idle_connection() {
    exec 3<>"/dev/tcp/127.0.0.1/$port" || fail "$1: cannot connect to port $port"
    printf 'x' >&3
    local reply=
    read -r -t 10 -n 1 -u 3 reply || fail "$1: no echo within 10 s"
    [ "$reply" = x ] || fail "$1: echoed '$reply', expected 'x'"
}

# 1. A client against the server, then SIGTERM with nothing open.
start_server client 0
timeout 60 "$client_bin" -n 200 127.0.0.1 "$port" >"$work_dir/client.out" 2>&1
status=$?
cat "$work_dir/client.out"
[ "$status" -eq 0 ] || fail "client: echo_client exited with status $status"
grep -q "^echoed 200 messages (.* bytes) through 127\.0\.0\.1:$port byte for byte" \
    "$work_dir/client.out" || fail "client: echo_client printed no summary line"
kill -TERM "$server_pid"
stop_server client 10
expect_line client "^received SIGINT or SIGTERM$"
expect_line client "waiting up to 5000 ms for 0 open connections$"
expect_line client "^all open connections finished$"
expect_line client "^served 1 connection, echoed [0-9]* bytes, canceled 0, failed 0$"
echo "client: ok"

# 2. An idle connection outlives a drain deadline of 300 ms.
start_server deadline -g 300 0
open_idle_connection deadline
kill -TERM "$server_pid"
stop_server deadline 10
exec 3>&-
expect_line deadline "waiting up to 300 ms for 1 open connection$"
expect_line deadline "^drain deadline passed: canceling 1 open connection$"
expect_line deadline "^served 1 connection, echoed 1 bytes, canceled 1, failed 0$"
echo "deadline: ok"

# 3. A second signal ends a drain of 60 s at once.
start_server second -g 60000 0
open_idle_connection second
kill -TERM "$server_pid"
wait_for_line second "^shutting down"
kill -INT "$server_pid"
stop_server second 10
exec 3>&-
expect_line second "^second signal: canceling 1 open connection$"
expect_line second "^served 1 connection, echoed 1 bytes, canceled 1, failed 0$"
echo "second signal: ok"

echo "ok"
