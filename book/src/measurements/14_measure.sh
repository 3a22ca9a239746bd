#!/usr/bin/env bash
# Chapter 14's table: TLS (14_tls_server) against plain TCP (06_threaded_server, the
# same thread-per-connection server without TLS), driven by lesson 11's load client.
# Bounded runs on loopback, five alternating rounds; prints each run's summary line.
# "tls new-conn" makes full handshakes (the load client's default); "tls new-conn
# resumed" resumes sessions with tickets from earlier connections (--tls-resume).
#   book/src/measurements/14_measure.sh > book/src/measurements/14_tls.txt
set -euo pipefail
cd "$(dirname "$0")/../../.."
cargo build --release --quiet --bin 14_tls_server --bin 06_threaded_server --bin 11_load_test_client
R=target/release
dir=$(mktemp -d)
trap 'kill -INT $tls $plain 2>/dev/null; wait; rm -rf "$dir"' EXIT
$R/14_tls_server --port 0 --quiet --cert-dir "$dir/certs" > "$dir/tls.log" &
tls=$!
$R/06_threaded_server --port 0 --quiet > "$dir/plain.log" &
plain=$!
port() { until grep -q "listening on" "$1" 2>/dev/null; do sleep 0.05; done; head -1 "$1" | sed 's/.*://'; }
tls_port=$(port "$dir/tls.log")
plain_port=$(port "$dir/plain.log")
ca="$dir/certs/ca.pem"
run() { # name, client args...
  local name=$1; shift
  printf '%-24s ' "$name"
  $R/11_load_test_client "$@" | grep '^summary' | sed 's/^summary //'
}
echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, $(uname -r); loopback"
for round in 1 2 3 4 5; do
  echo "# round $round"
  run "plain new-conn 64B" --port "$plain_port" --new-connection-per-request --conns 2 --requests 1000
  run "tls new-conn 64B" --port "$tls_port" --tls "$ca" --new-connection-per-request --conns 2 --requests 500
  run "tls new-conn resumed 64B" --port "$tls_port" --tls "$ca" --tls-resume --new-connection-per-request --conns 2 --requests 500
  run "plain keep 64B" --port "$plain_port" --conns 2 --requests 20000
  run "tls keep 64B" --port "$tls_port" --tls "$ca" --conns 2 --requests 20000
  run "plain keep 16KiB" --port "$plain_port" --conns 2 --requests 5000 --size 16384
  run "tls keep 16KiB" --port "$tls_port" --tls "$ca" --conns 2 --requests 5000 --size 16384
done
