#!/usr/bin/env bash
# The sweep tests (tests/test_sweep.py) run workers against a real PostgreSQL server, which the test starts
# in a temporary folder as an unprivileged user. Install Debian's server binaries where we can (root on
# Debian/Ubuntu); the packaged cluster is not used (the test runs its own), so it is not started here.
set -u
if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian's postgresql for the sweep tests (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends postgresql >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q --no-install-recommends postgresql >/dev/null 2>&1; } \
    || echo "could not install postgresql: the PostgreSQL sweep test will fail (install postgresql to run it)"
else
  echo "no PostgreSQL and no root apt-get: the PostgreSQL sweep test will fail (install postgresql to run it)"
fi
exit 0
