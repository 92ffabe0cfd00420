#!/usr/bin/env bash
# Set up (with test tools and Chromium), then run the whole test suite: scripts/test.sh [pytest options]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh dev
exec .venv/bin/python -m pytest "$@"
