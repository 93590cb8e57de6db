#!/usr/bin/env bash
# The HTTP path measured with a real load generator: hello-world axum
# served bare, behind tower's built-ins and behind `http_layer` (every
# part on, the monitor running), each on 127.0.0.1 with two workers and
# loaded in turn by wrk; then the same three for gRPC with a tonic client
# (`grpc-load`). Prints each round and a table of medians and ratios.
#
#   benches/http/run.sh [rounds=3] [seconds=5] [connections=32]
#
# Installs wrk (Debian) when missing; builds in release. Not part of
# .ci/run: loopback figures move with whatever else the machine runs.
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-3}
seconds=${2:-5}
connections=${3:-32}

if ! command -v wrk >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y wrk >/dev/null 2>&1 \
            || (apt-get update >/dev/null 2>&1 && apt-get install -y wrk >/dev/null 2>&1)
    fi
fi
command -v wrk >/dev/null 2>&1 || { echo "wrk is needed (apt-get install wrk) and could not be installed" >&2; exit 1; }

cargo build --release -q -p tower-hardening-http-bench --features servers
bin="${CARGO_TARGET_DIR:-target}/release"
work=$(mktemp -d)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

modes=(bare tower hardened)
declare -A address pid_of
for mode in "${modes[@]}"; do
    "$bin/http-server" "$mode" --workers 2 > "$work/$mode.out" 2>&1 &
    pids+=($!)
    pid_of[$mode]=$!
    for _ in $(seq 100); do
        grep -q "listening on" "$work/$mode.out" 2>/dev/null && break
        sleep 0.1
    done
    address[$mode]=$(awk '/listening on/ { print $3 }' "$work/$mode.out")
    [ -n "${address[$mode]}" ] || { cat "$work/$mode.out"; echo "the $mode server did not start" >&2; exit 1; }
done

# CPU time (user + system, in clock ticks) a process has used so far.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
ticks_per_second=$(getconf CLK_TCK)

# wrk's "50%" latency in microseconds.
to_us() {
    awk '{ v = $1; if (v ~ /us$/) { sub(/us$/, "", v); print v }
           else if (v ~ /ms$/) { sub(/ms$/, "", v); print v * 1000 }
           else if (v ~ /s$/) { sub(/s$/, "", v); print v * 1000000 } }'
}

echo "HTTP: GET / (hello world), wrk -t1 -c$connections -d${seconds}s, $rounds rounds, servers alternating"
for mode in "${modes[@]}"; do # warm-up
    wrk -t1 -c"$connections" -d1s "http://${address[$mode]}/" >/dev/null
done
for round in $(seq "$rounds"); do
    for mode in "${modes[@]}"; do
        before=$(cpu_ticks "${pid_of[$mode]}")
        out=$(wrk -t1 -c"$connections" -d"${seconds}s" --latency "http://${address[$mode]}/")
        after=$(cpu_ticks "${pid_of[$mode]}")
        if echo "$out" | grep -q "Non-2xx"; then echo "$out"; echo "the $mode server answered errors" >&2; exit 1; fi
        rps=$(echo "$out" | awk '/Requests\/sec/ { print $2 }')
        requests=$(echo "$out" | awk '/requests in/ { print $1 }')
        p50=$(echo "$out" | awk '$1 == "50%" { print $2 }' | to_us)
        # The server's own CPU time per request: steadier than req/s on a
        # machine that runs other work, since it counts only this process.
        cpu=$(awk -v t=$((after - before)) -v hz="$ticks_per_second" -v n="$requests" 'BEGIN { printf "%.2f", t / hz * 1e6 / n }')
        echo "$mode $rps $p50 $cpu" >> "$work/figures"
        printf 'round %s %-9s %10.0f req/s  p50 %7.1f µs  server CPU %6.2f µs/request\n' "$round" "$mode" "$rps" "$p50" "$cpu"
    done
done

median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
echo
echo "| server | req/s (median) | p50 µs (median) | server CPU µs/request (median) | req/s vs bare | p50 vs bare | CPU vs bare |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
bare_rps=$(awk '$1 == "bare" { print $2 }' "$work/figures" | median)
bare_p50=$(awk '$1 == "bare" { print $3 }' "$work/figures" | median)
bare_cpu=$(awk '$1 == "bare" { print $4 }' "$work/figures" | median)
for mode in "${modes[@]}"; do
    rps=$(awk -v m="$mode" '$1 == m { print $2 }' "$work/figures" | median)
    p50=$(awk -v m="$mode" '$1 == m { print $3 }' "$work/figures" | median)
    cpu=$(awk -v m="$mode" '$1 == m { print $4 }' "$work/figures" | median)
    awk -v m="$mode" -v r="$rps" -v p="$p50" -v c="$cpu" -v br="$bare_rps" -v bp="$bare_p50" -v bc="$bare_cpu" \
        'BEGIN { printf "| %s | %.0f | %.0f | %.2f | %.1f%% | %+.1f%% | %+.1f%% |\n", m, r, p, c, r * 100 / br, (p / bp - 1) * 100, (c / bc - 1) * 100 }'
done

echo
[ "${SKIP_GRPC:-}" = 1 ] || "$bin/grpc-load" --rounds "$rounds" --seconds "$seconds"
