#!/usr/bin/env bash
# Installs what `make run` and `make test` need that uv cannot: Redis 7 and PostgreSQL 15
# servers and PgBouncer (Debian/Ubuntu packages, as root), a C compiler, curl, and uv itself.
# Idempotent: installs only what is missing. Elsewhere it names what to install and stops.
set -euo pipefail

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 && ! command -v postgres >/dev/null 2>&1; then
  missing+=(postgresql)
fi
command -v curl >/dev/null 2>&1 || missing+=(curl)
# The benchmark's load generator (`make bench`, and its smoke test in `make test`).
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
# The connection pooler the scale tests put in front of PostgreSQL (Debian installs it in
# /usr/sbin, which is not on every PATH).
command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ] || missing+=(pgbouncer)
# `make compile` builds the mechanics' hot path with mypyc: a C compiler, the C library's
# headers (gcc only recommends them) and Python's.
command -v cc >/dev/null 2>&1 || missing+=(gcc)
[ -e /usr/include/stdio.h ] || missing+=(libc6-dev)
python3 -c 'import os, sys, sysconfig
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
  || missing+=(python3-dev)
# The console's browser tests (tests/console) drive Debian's Chromium through Playwright.
command -v chromium >/dev/null 2>&1 || missing+=(chromium)

if ((${#missing[@]})); then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install these first (Redis >= 7, PostgreSQL >= 15): ${missing[*]}" >&2
    exit 1
  fi
  echo "installing: ${missing[*]}"
  # Keep the packages' own services from starting: our servers are throwaway ones we
  # start ourselves, and nothing may be left running.
  policy=/usr/sbin/policy-rc.d
  created_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && created_policy=1
  fi
  trap '[ "$created_policy" = 1 ] && rm -f "$policy"' EXIT
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v uv >/dev/null 2>&1 && ! python3 -m uv --version >/dev/null 2>&1; then
  echo "installing uv"
  python3 -m pip install -q uv
fi
