#!/usr/bin/env bash
# The browser end-to-end test drives Debian's Chromium (Playwright's own browser download does not
# work on these machines). Installs it, and a colour emoji font so screenshots show the dashboard's
# icons, when missing. Needs root (CI runs as root); otherwise says so and leaves the test to skip.
set -euo pipefail
need=()
[ -x /usr/bin/chromium ] || need+=(chromium)
[ -e /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf ] || need+=(fonts-noto-color-emoji)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "install_browser: missing ${need[*]} and not root; the browser test will be skipped" >&2
  exit 0
fi
echo "install_browser: apt-get install ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
