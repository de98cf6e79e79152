#!/usr/bin/env bash
# System packages for the test suite: Debian's chromium (the label app's browser test).
# Skipped quietly when already present; when apt is unavailable the browser test skips itself.
set -uo pipefail
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "installing system test packages: ${need[*]}"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}") >/dev/null 2>&1 \
      || echo "warning: could not install ${need[*]}; tests that need them will skip"
  else
    echo "note: ${need[*]} missing and apt-get not usable; tests that need them will skip"
  fi
fi
exit 0
