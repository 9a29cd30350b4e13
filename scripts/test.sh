#!/usr/bin/env bash
# Runs the whole test suite of Dossier on a fresh machine: installs and starts what the tests need,
# builds, runs every Rust test (SQLite and PostgreSQL), then checks and tests the bundled
# workflows with the dossier binary itself.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n== %s\n' "$*"; }

# PostgreSQL on 127.0.0.1:5432 with trust authentication: the storage, engine and crash tests
# create (and drop) their own databases there.
if ! (command -v pg_isready >/dev/null && pg_isready -h 127.0.0.1 -p 5432 -q); then
  say "starting PostgreSQL"
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq postgresql >/dev/null
    ver=$(ls /etc/postgresql | head -n 1)
    sed -i 's/^\(host\|local\)\(.*\)\(peer\|scram-sha-256\|md5\)$/\1\2trust/' "/etc/postgresql/$ver/main/pg_hba.conf"
  fi
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start || true
  for _ in $(seq 1 30); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 1; done
  pg_isready -h 127.0.0.1 -p 5432
fi

# The servers the connector tests talk to (SMTP, CalDAV, IPP printer): installed here, started
# and stopped by each test on its own loopback port.
say "test servers: aiosmtpd, Radicale, ippeveprinter"
bash scripts/test-servers.sh

say "building"
cargo build --workspace --all-targets --locked

say "Rust tests (units, storage on SQLite and PostgreSQL, engine, kill -9)"
cargo test --workspace --locked -- --test-threads 2

say "the bundled workflows: dossier validate (with placeholder secrets) and dossier test"
# A throwaway Ed25519 key (PKCS#8 DER: the fixed prefix, then a random 32-byte seed).
DOSSIER_CARTE_CLE_PRIVEE=$( (printf '\x30\x2e\x02\x01\x00\x30\x05\x06\x03\x2b\x65\x70\x04\x22\x04\x20'; head -c 32 /dev/urandom) | base64 -w0)
export DOSSIER_CARTE_CLE_PRIVEE
DOSSIER_FNE_API_KEY=x DOSSIER_ORANGE_CLIENT_ID=x DOSSIER_ORANGE_CLIENT_SECRET=x \
  DOSSIER_SMS_RECEIPT_TOKEN=x DOSSIER_AGENDA_PASSWORD=x ./target/debug/dossier validate
./target/debug/dossier test

say "the connectors example: dossier validate (with placeholder secrets) and dossier test"
DOSSIER_FNE_API_KEY=x DOSSIER_AGENDA_PASSWORD=x DOSSIER_ORANGE_CLIENT_ID=x \
  DOSSIER_ORANGE_CLIENT_SECRET=x DOSSIER_SMS_RECEIPT_TOKEN=x \
  DOSSIER_CRM_WEBHOOK_SECRET=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw \
  ./target/debug/dossier --project examples/connecteurs validate
./target/debug/dossier --project examples/connecteurs test
