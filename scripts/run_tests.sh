#!/usr/bin/env bash
# The test command (README "Run the tests"; CI runs exactly this): install, lint (py39 target), run every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_venv.sh
.venv/bin/ruff check .
.venv/bin/python -m pytest Testing -p no:cacheprovider "$@"
