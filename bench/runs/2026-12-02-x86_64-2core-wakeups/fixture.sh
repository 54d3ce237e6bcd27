# Sourced by measure.sh and instructions.sh: the no-op function and wrk's
# request in $D. `fixture COMMAND` takes the manifest's command (TOML
# array) and adds the env table in $FN_ENV when set.
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
