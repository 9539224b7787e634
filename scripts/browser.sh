#!/usr/bin/env bash
# Debian's chromium and its WebDriver, for the web UI's browser tests (tests/web). Needs root and apt-get;
# a no-op when both are installed. .ci/run calls it; so does the tests' set-up when the browser is missing.
set -euo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -q chromium chromium-driver >/dev/null
command -v chromium >/dev/null && command -v chromedriver >/dev/null
