#!/usr/bin/env bash
# The project's test command (README "Run the tests"): Rust tests of every
# crate, then the independent Python cross-check of the golden ICS files
# (icalendar + recurring-ical-events, pinned, installed into target/pyenv), and the
# real feed subscribers the feed tests drive (vdirsyncer, khal, ical.js).
set -euo pipefail
cd "$(dirname "$0")/.."

PYENV=target/pyenv
if [ ! -x "$PYENV/bin/python" ]; then
    python3 -m venv "$PYENV"
fi
"$PYENV/bin/pip" install --quiet --disable-pip-version-check -r tests/crosscheck/requirements.txt \
    -r tests/feed-clients/requirements.txt \
    -r tests/ews-schema/requirements.txt \
    -r tests/ntlm-client/requirements.txt

# Real feed subscribers for tests/e2e/feeds.rs: vdirsyncer + khal (pip, above) and
# Mozilla's ical.js under Node (npm, pinned, into target/node).
mkdir -p target/node
if [ ! -f target/node/node_modules/ical.js/package.json ]; then
    echo '{"name":"feed-clients","private":true,"type":"module"}' > target/node/package.json
    (cd target/node && npm install --silent --no-audit --no-fund ical.js@2.2.1)
fi
# (tests/ews-schema/requirements.txt: lxml, which validates every EWS request the tests capture.)
# (tests/ntlm-client/requirements.txt: requests_ntlm, an independent NTLM client for the EWS emulator.)

cargo test --workspace --locked
"$PYENV/bin/python" tests/crosscheck/check_ics.py
# The Graph sink's request bodies captured by its integration test
# (bridge-engine sink_graph) against Microsoft's CSDL subset (stdlib only).
for body in target/graph-csdl-bodies/*.json; do
    "$PYENV/bin/python" tests/graph-csdl/graph_event_check.py tests/graph-csdl/event-subset-v1.0.csdl "$body" >/dev/null \
        || { echo "CSDL check failed: $body"; exit 1; }
done
