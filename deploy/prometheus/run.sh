#!/usr/bin/env bash
# One command to see tower-hardening's figures in a real Prometheus: runs
# the demo (its healthy / outage / recovery story, again and again) and a
# Prometheus scraping its /metrics every 5 s with deploy/prometheus/alerts.yml
# loaded. Needs Debian's `prometheus` package (apt-get install prometheus).
#
#   deploy/prometheus/run.sh            # until Ctrl-C
#   deploy/prometheus/run.sh --check    # waits for the first scrape, queries, exits
#
# DEMO_PORT (default 3000) and PROMETHEUS_PORT (default 9090) choose the ports.
set -euo pipefail
cd "$(dirname "$0")/../.."
demo_port=${DEMO_PORT:-3000}
prometheus_port=${PROMETHEUS_PORT:-9090}
check=false
[ "${1:-}" = "--check" ] && check=true

if ! command -v prometheus >/dev/null 2>&1; then
    echo "no prometheus: install Debian's package (apt-get install prometheus)" >&2
    exit 1
fi

# A port already taken (Debian's package starts its own Prometheus on
# 9090, Grafana listens on 3000) would be a minute's wait for nothing.
for port in "$demo_port" "$prometheus_port"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "port $port is in use: choose others with DEMO_PORT and PROMETHEUS_PORT" >&2
        exit 1
    fi
done

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

cat > "$work/prometheus.yml" <<YAML
global:
  scrape_interval: 5s
  evaluation_interval: 5s
rule_files:
  - $PWD/deploy/prometheus/alerts.yml
scrape_configs:
  - job_name: tower-hardening
    metrics_path: /hardening/metrics
    static_configs:
      - targets: ["127.0.0.1:$demo_port"]
YAML
promtool check config "$work/prometheus.yml" >/dev/null

# --check builds the debug demo (what .ci/run has built already).
profile=(--release)
$check && profile=()
cargo build -q "${profile[@]}" --example demo
cargo run -q "${profile[@]}" --example demo -- --serve --repeat --port "$demo_port" > "$work/demo.log" 2>&1 &
pids+=($!)
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/data" \
    --web.listen-address="127.0.0.1:$prometheus_port" > "$work/prometheus.log" 2>&1 &
pids+=($!)

api="http://127.0.0.1:$prometheus_port/api/v1"
query() {
    curl -fsS --get "$api/query" --data-urlencode "query=$1"
}
# Up when Prometheus has scraped the demo and holds its request counter.
for _ in $(seq 1 60); do
    for pid in "${pids[@]}"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "the demo or Prometheus stopped:" >&2
            tail -n 20 "$work/demo.log" "$work/prometheus.log" >&2
            exit 1
        fi
    done
    if query 'sum(hardening_requests_total)' 2>/dev/null | grep -q '"value"'; then
        break
    fi
    sleep 1
done
if ! query 'up{job="tower-hardening"} == 1' 2>/dev/null | grep -q '"value"'; then
    echo "Prometheus did not scrape the demo in 60 s" >&2
    tail -n 20 "$work/demo.log" "$work/prometheus.log" >&2
    exit 1
fi

echo "demo:       http://127.0.0.1:$demo_port/hardening/dashboard"
echo "Prometheus: http://127.0.0.1:$prometheus_port/graph?g0.expr=sum%20by%20(service%2C%20outcome)%20(rate(hardening_requests_total%5B1m%5D))&g0.tab=0"
echo "alerts:     http://127.0.0.1:$prometheus_port/alerts (rules from deploy/prometheus/alerts.yml)"
if $check; then
    rules=$(curl -fsS "$api/rules" | grep -o '"type":"alerting"' | wc -l)
    echo "Prometheus scrapes the demo: $(query 'count({__name__=~"hardening_.+"})' | grep -o '"value":\[[^]]*\]'), $rules alert rules loaded"
    [ "$rules" -ge 6 ] || { echo "the alert rules did not load" >&2; exit 1; }
    exit 0
fi
echo "Ctrl-C stops both."
wait
