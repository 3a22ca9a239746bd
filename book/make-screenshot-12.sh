#!/usr/bin/env bash
# Makes book/src/images/12_http_page.png, the picture in chapter 12: lesson 12's page
# as headless Chromium draws it. Run it by hand when the page changes (cargo test does
# not): book/make-screenshot-12.sh. Needs chromium (Debian: apt-get install chromium)
# and port 10012 free (PORT=... picks another).
set -euo pipefail
cd "$(dirname "$0")/.."
port=${PORT:-10012}
out=$PWD/book/src/images/12_http_page.png
cargo build --quiet --bin 12_http_server
profile=$(mktemp -d)
log=$(mktemp)
./target/debug/12_http_server --quiet --port "$port" >"$log" 2>&1 &
server=$!
trap 'kill -INT "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -rf "$profile" "$log"' EXIT
for _ in $(seq 100); do
  grep -q "^listening on" "$log" && break
  kill -0 "$server" 2>/dev/null || { cat "$log"; exit 1; }
  sleep 0.1
done
grep -q "^listening on" "$log" || { echo "the server did not start: $(cat "$log")"; exit 1; }
# --no-sandbox: Chromium refuses to run as root without it. The other flags keep a
# fresh headless browser from calling home while it starts.
timeout 60 chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --hide-scrollbars --user-data-dir="$profile" --window-size=1000,760 \
  --screenshot="$out" "http://127.0.0.1:$port/" 2>/dev/null
echo "wrote $out"
