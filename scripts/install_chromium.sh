#!/usr/bin/env bash
# The browser test (tests/test_serve.py) drives Debian's Chromium with Playwright for Python (Playwright's
# own browser download is not used). Install it where we can: root on Debian/Ubuntu. Elsewhere the test
# is skipped with its reason; install `chromium` yourself to run it.
set -u
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian's chromium for the browser test (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; } \
    || echo "could not install chromium: the browser test will be skipped"
else
  echo "no chromium and no root apt-get: the browser test will be skipped (install chromium to run it)"
fi
exit 0
