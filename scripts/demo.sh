#!/usr/bin/env bash
# Set up (idempotent), then run the main job on the embedded defaults: demo grid ->
# 4MOST-ified training set -> small cINN training -> evaluation report -> posterior of a
# held-out spectrum. Outputs go to demo-out/ (re-running resumes each stage).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python scripts/demo.py "$@"
