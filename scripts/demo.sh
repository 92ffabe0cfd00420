#!/usr/bin/env bash
# Set up, then train a tiny model and log what it predicts: scripts/demo.sh [seqviz demo options]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/seqviz demo "$@"
