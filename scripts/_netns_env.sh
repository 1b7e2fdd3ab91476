#!/usr/bin/env bash
# Tools for the network-namespace tests (harness/netns.py): iproute2 (ip netns, veth, tc)
# and nftables (to partition a site). Idempotent: installs only what is missing, via apt.
# Needs root (namespaces need it anyway); does nothing and says why otherwise.
# scripts/test installs the same tools through _services_env.sh; this is for running the
# netns tests or benchmarks by hand.
set -euo pipefail
missing=()
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v tc >/dev/null 2>&1 || missing+=(iproute2)
command -v nft >/dev/null 2>&1 || missing+=(nftables)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "netns tools missing (${missing[*]}) and not root: the netns test will skip." >&2
  exit 0
fi
echo "==> installing ${missing[*]} (apt)"
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null 2>&1 || {
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}
