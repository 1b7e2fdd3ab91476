# Sourced by scripts/test: the Debian packages the tests start for real (PostgreSQL,
# Redis, nginx for benchmarks, HAProxy for the rolling restart of access points) and the
# network tools of the netns tests (iproute2 for namespaces, veth and tc; nftables to
# partition a site), so that on a new machine no test skips for a missing package.
# Installs only what is missing; needs root (CI and these machines run as root).
set -euo pipefail
need=()
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need+=(postgresql)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
{ command -v ip && command -v tc; } >/dev/null 2>&1 || need+=(iproute2)
command -v nft >/dev/null 2>&1 || need+=(nftables)
command -v haproxy >/dev/null 2>&1 || need+=(haproxy)
# shellcheck source=scripts/_install.sh
source "$ROOT/scripts/_install.sh"
debian_install "${need[@]}"
# the Debian package starts a cluster of its own on port 5432; the tests use their own
service postgresql stop >/dev/null 2>&1 || true
# and the haproxy package its own proxy on port 80; the tests start theirs
service haproxy stop >/dev/null 2>&1 || true
