# Sourced by measure.sh, instructions.sh and the mimalloc run's scripts:
# the no-op function and wrk's request in $D. `fixture COMMAND` takes the
# manifest's command (TOML array) and adds the env table in $FN_ENV when set.
fixture() {
    mkdir -p "$D/fns"
    cat > "$D/fns/noop2.toml" <<M
name = "noop2"
runtime = "command"
command = $1
handler = "echo"
memory_mb = 1769
timeout_ms = 3000
max_concurrency = 2
max_queue = 1000
keep_alive_ms = 600000
${FN_ENV:+env = $FN_ENV}
M
    cat > "$D/post.lua" <<L
wrk.method = "POST"
wrk.body = '{"ping":1}'
wrk.headers["Content-Type"] = "application/json"
L
}

# `serve BIN [serve args...]`: the fixture in a fresh $D, `virga serve` on
# it in the background ($PID, stopped and $D removed on exit) and the
# function's invoke URL in $URL.
serve() {
    local bin=$1; shift
    D=$(mktemp -d); trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$D"' EXIT
    fixture '["virga-worker"]'
    "$bin" serve --addr 127.0.0.1:0 --data-dir "$D/data" --functions "$D/fns" \
        --max-memory-mb 200000000 "$@" > "$D/out" 2> "$D/log" &
    PID=$!
    for _ in $(seq 50); do grep -q "127.0.0.1:" "$D/out" 2>/dev/null && break; sleep 0.2; done
    URL=http://$(grep -o "127.0.0.1:[0-9]*" "$D/out" | head -1)/2015-03-31/functions/noop2/invocations
}
