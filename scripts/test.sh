#!/usr/bin/env bash
# The project's test command (README "Run the tests"): Rust tests of every
# crate, then the independent Python cross-check of the golden ICS files
# (icalendar + recurring-ical-events, pinned, installed into target/pyenv).
set -euo pipefail
cd "$(dirname "$0")/.."

PYENV=target/pyenv
if [ ! -x "$PYENV/bin/python" ]; then
    python3 -m venv "$PYENV"
fi
"$PYENV/bin/pip" install --quiet --disable-pip-version-check -r tests/crosscheck/requirements.txt
# lxml validates every EWS request the tests capture against tests/ews-schema/.
"$PYENV/bin/pip" install --quiet --disable-pip-version-check -r tests/ews-schema/requirements.txt

cargo test --workspace --locked
"$PYENV/bin/python" tests/crosscheck/check_ics.py
