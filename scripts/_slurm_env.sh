#!/usr/bin/env bash
# Installs a single-node Slurm (Debian's packages) for the tests of the Slurm job runner,
# when it is not there yet. Idempotent: a no-op once slurmctld, slurmd and sbatch exist.
# Needs root (apt-get). Used by harness/slurm.py and callable by hand.
set -euo pipefail
need=()
for cmd in slurmctld slurmd sbatch munged; do
  command -v "$cmd" >/dev/null 2>&1 || need+=("$cmd")
done
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "Slurm is missing (${need[*]}) and installing it needs root." >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
pkgs=(slurmctld slurmd slurm-client munge)
if ! apt-get install -y -q "${pkgs[@]}" >/dev/null 2>&1; then
  apt-get update -q >/dev/null
  apt-get install -y -q "${pkgs[@]}" >/dev/null
fi
for cmd in slurmctld slurmd sbatch munged; do
  command -v "$cmd" >/dev/null 2>&1 || { echo "still missing after install: $cmd" >&2; exit 1; }
done
echo "==> installed Slurm: $(slurmctld -V)"
