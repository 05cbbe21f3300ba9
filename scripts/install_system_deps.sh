#!/usr/bin/env bash
# Debian packages the tests use: Chromium (browser end-to-end test), the real Fashion-MNIST data set
# (IDX files), and the servers of the scale-out tests: PostgreSQL, and Slurm (slurmctld + slurmd)
# with munge. The tests start those servers themselves on localhost. Installed only when missing;
# needs root (CI runs as root).
set -euo pipefail
need=()
[ -x /usr/bin/chromium ] || need+=(chromium)
# colour emoji font, so the browser test's screenshots show the dashboard's icons
[ -e /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf ] || need+=(fonts-noto-color-emoji)
[ -d /usr/share/datasets/fashion-mnist ] || need+=(dataset-fashion-mnist)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v slurmctld >/dev/null 2>&1 || need+=(slurm-wlm)
command -v munged >/dev/null 2>&1 || need+=(munge)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "install_system_deps: missing ${need[*]} and not root; the tests that need them will be skipped" >&2
  exit 0
fi
echo "install_system_deps: apt-get install ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
