#!/bin/bash
# Copy dpdk-testpmd, the shared libraries it loads (all but libc, libm and the
# loader, which the device machine has) and the two DPDK drivers the memif
# cells need into one folder (default perf/dpdk, about 17 MiB), and have git
# ignore it (.git/info/exclude), so that a device run can carry it:
#     bash perf/dpdk-carry.sh            # here, where dpdk-dev is installed
#     device run, carry ["perf/dpdk"]: bash perf/device.sh
set -eu
cd "$(dirname "$0")/.."
dest=${1:-perf/dpdk}
testpmd=$(command -v dpdk-testpmd) || { echo "dpdk-testpmd not installed (apt-get install dpdk-dev)" >&2; exit 1; }
pmds=$(ls -d /usr/lib/x86_64-linux-gnu/dpdk/pmds-* | tail -1)
mkdir -p "$dest"
cp -L "$testpmd" "$dest/dpdk-testpmd"
ldd "$testpmd" | awk '$3 ~ /^\// {print $3}' | grep -Ev '/(libc|libm|ld-linux[^/]*)\.so' |
    while read -r lib; do cp -L "$lib" "$dest/"; done
cp -L "$pmds"/librte_net_memif.so.2? "$pmds"/librte_mempool_ring.so.2? "$dest/"
case "$dest" in
/*) ;;          # outside the checkout: nothing for git to ignore
*)  exclude=$(git rev-parse --git-path info/exclude)
    mkdir -p "$(dirname "$exclude")"
    grep -qxF "/$dest/" "$exclude" 2>/dev/null || echo "/$dest/" >> "$exclude";;
esac
du -sh "$dest"
