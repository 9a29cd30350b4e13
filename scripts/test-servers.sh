#!/usr/bin/env bash
# Installs the servers the connector tests talk to, on loopback only:
#   - aiosmtpd (PyPI): a real SMTP server, with STARTTLS, implicit TLS and AUTH;
#   - Radicale (PyPI): a real CalDAV server;
#   - ippeveprinter (Debian's cups-ipp-utils): an IPP Everywhere printer simulator, with the
#     dbus-daemon it needs.
# The tests start and stop their own instances on free ports (connectors/tests/support); this
# script only makes the programs available. Python packages go into a virtual environment in
# target/test-servers, so nothing is installed into the system Python.
# Prints nothing but errors when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/test-servers/venv
if ! "$venv/bin/python" -c 'import aiosmtpd, radicale' >/dev/null 2>&1; then
  echo "== installing aiosmtpd and Radicale into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'aiosmtpd==1.4.6' 'radicale==3.9.0'
fi

# ippeveprinter (and ipptool, which the tests use to look at the printer's jobs) come with
# cups-ipp-utils. It will not start without a D-Bus daemon, even with DNS-SD off: the tests run a
# private dbus-daemon for it.
need=()
command -v ippeveprinter >/dev/null 2>&1 || need+=(cups-ipp-utils)
command -v ipptool >/dev/null 2>&1 || need+=(cups-ipp-utils)
command -v dbus-daemon >/dev/null 2>&1 || need+=(dbus-daemon)
if [ ${#need[@]} -gt 0 ]; then
  echo "== installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if ! command -v openssl >/dev/null 2>&1; then
  echo "== installing openssl (test certificates for SMTP over TLS)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq openssl >/dev/null
fi
