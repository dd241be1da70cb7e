#!/usr/bin/env bash
# The main job (README "Try it"): install, then run the whole pipeline on the built-in head phantom.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_venv.sh
.venv/bin/susceptibility-mri run --phantom --out "${1:-output}"
