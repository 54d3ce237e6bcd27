#!/bin/bash
# The soak with heaptrack on `virga serve`, and the platform's live heap
# (bytes allocated and not freed) through it: the last sample of each 10 s
# of the platform's life, from heaptrack's massif export.
#   soak-heaptrack.sh GLIBC_VIRGA_BIN OUT_DIR   (VIRGA_SOAK_* as for the soak)
# GLIBC_VIRGA_BIN: `virga` built with glibc's malloc, which heaptrack can
# see (in crates/virga-cli/src/main.rs, `mimalloc::MiMalloc` ->
# `std::alloc::System` in the global allocator). The soak
# starts target/release/virga, so this puts a wrapper there for the run
# and puts the real one back after. Run from the repository's root, after
# `cargo bench -p virga-cli --bench soak --no-run`. Writes soak.txt,
# trace.gz and live-heap.txt to OUT_DIR.
set -eu
GLIBC=$(realpath "$1"); OUT=$(realpath "$2"); mkdir -p "$OUT"
SOAK=$(ls -t target/release/deps/soak-* | grep -v '\.d$' | head -1)
mv target/release/virga target/release/virga.real
trap 'mv target/release/virga.real target/release/virga' EXIT
cat > target/release/virga <<W
#!/bin/sh
LD_PRELOAD=/usr/lib/heaptrack/libheaptrack_preload.so DUMP_HEAPTRACK_OUTPUT=$OUT/raw exec $GLIBC "\$@"
W
chmod +x target/release/virga
"$SOAK" --bench | tee "$OUT/soak.txt"
/usr/lib/heaptrack/libexec/heaptrack_interpret < "$OUT/raw" | gzip > "$OUT/trace.gz"
rm "$OUT/raw"
heaptrack_print -f "$OUT/trace.gz" --print-peaks 0 --print-allocators 0 \
    --print-temporary 0 -M "$OUT/massif" --massif-detailed-freq 100000 > /dev/null
echo "seconds live-heap-MB" > "$OUT/live-heap.txt"
grep -E "^time=|^mem_heap_B=" "$OUT/massif" | paste - - |
    awk -F'[= \t]+' '{t = int($2 / 10) * 10; h[t] = $4 / 1048576} END {for (t in h) printf "%d %.2f\n", t, h[t]}' |
    sort -n >> "$OUT/live-heap.txt"
