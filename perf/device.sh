#!/bin/bash
# The README's figures in one go on the 16-core device machine (no network,
# no DPDK installed there): builds memifx in place, puts the carried
# dpdk-testpmd on PATH (prepared here by perf/dpdk-carry.sh), runs the cells
# within a time budget and leaves results.{md,json}, run.log and build.log in
# $OUT.  Without a carried testpmd the testpmd cells are skipped (the report
# lists them under "Skipped cells").
#
#     bash perf/dpdk-carry.sh                                   # here, once
#     device run, carry ["perf/dpdk"], timeout_s 600:  bash perf/device.sh
#
# Environment (defaults in brackets): OUT [perf/results/device], MXPERF_DPDK
# [perf/dpdk], MXPERF_BUDGET seconds after which no trial starts [470],
# MXPERF_QUEUES [1,2,4,7], MXPERF_TRIALS [3], MXPERF_SECONDS per trial [1],
# MXPERF_ONLY (space-separated --only values) [the cells of the issue's
# targets: 35 cells of ~5 s (estimated, not yet timed there): 3 rounds take
# ~9 minutes, so the budget may cut the third round short; the report marks
# cells with fewer than 3 trials].
# Longer trials need two calls (e.g. MXPERF_ONLY=mq in the second, another OUT).
# The carried folder must not lie below a world-writable directory such as
# /tmp: DPDK refuses to load drivers from there.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-perf/results/device}
mkdir -p "$OUT"
DPDK=${MXPERF_DPDK:-perf/dpdk}
ONLY=${MXPERF_ONLY:-"uni-memifx-gen-slave uni-memifx-zc-slave uni-testpmd xc ip4-1route ip4-1M mq"}
PY=${PYTHON:-python3}

start=$(date +%s)
if ! $PY setup.py -q build_ext --inplace -j "$(nproc)" > "$OUT/build.log" 2>&1; then
    echo "device.sh: build failed"; tail -40 "$OUT/build.log"; exit 1
fi
echo "device.sh: built in $(( $(date +%s) - start )) s"
# an in-place build has no memifx.cli (setup.py installs cli/ under that name)
[ -e memifx/cli ] || ln -s ../cli memifx/cli
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}

installed=$(command -v dpdk-testpmd || true)
if [ -n "$installed" ] && [ -x "$installed" ]; then
    echo "device.sh: dpdk-testpmd installed here: $installed"
elif [ -x "$DPDK/dpdk-testpmd" ]; then
    # a wrapper named dpdk-testpmd: the carried libraries, and the two drivers
    # loaded by path (the plugin directory alone does not find net_memif)
    dpdk=$(cd "$DPDK" && pwd)
    bin=$(mktemp -d)
    drivers=""
    for d in "$dpdk"/librte_net_memif.so.* "$dpdk"/librte_mempool_ring.so.*; do
        drivers="$drivers -d $d"
    done
    printf '#!/bin/sh\nLD_LIBRARY_PATH=%s exec %s/dpdk-testpmd%s "$@"\n' \
        "$dpdk" "$dpdk" "$drivers" > "$bin/dpdk-testpmd"
    chmod +x "$bin/dpdk-testpmd"
    export PATH=$bin:$PATH
    echo "device.sh: dpdk-testpmd carried in $dpdk"
else
    echo "device.sh: no carried testpmd in $DPDK (bash perf/dpdk-carry.sh, carry it): testpmd cells skipped"
fi

only=()
for o in $ONLY; do only+=(--only "$o"); done
echo "device.sh: $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
PYTHONUNBUFFERED=1 $PY perf/run.py "${only[@]}" --sizes 64,1518 \
    --queues "${MXPERF_QUEUES:-1,2,4,7}" --trials "${MXPERF_TRIALS:-3}" \
    --trial-seconds "${MXPERF_SECONDS:-1}" --budget "${MXPERF_BUDGET:-470}" \
    --no-nodes --out "$OUT" 2> "$OUT/run.log"
rc=$?
tail -5 "$OUT/run.log"
echo "device.sh: rc $rc after $(( $(date +%s) - start )) s; results in $OUT"
exit $rc
