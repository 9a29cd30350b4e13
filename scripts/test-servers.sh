#!/usr/bin/env bash
# Installs the servers the connector tests talk to, on loopback only:
#   - aiosmtpd (PyPI): a real SMTP server, with STARTTLS, implicit TLS and AUTH;
#   - Radicale (PyPI): a real CalDAV server;
#   - ippeveprinter (Debian's cups-ipp-utils): an IPP Everywhere printer simulator.
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

if ! command -v ippeveprinter >/dev/null 2>&1; then
  echo "== installing ippeveprinter (cups-ipp-utils)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq cups-ipp-utils >/dev/null
fi

if ! command -v openssl >/dev/null 2>&1; then
  echo "== installing openssl (test certificates for SMTP over TLS)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq openssl >/dev/null
fi
