#!/usr/bin/env bash
# Set up .venv (with the [dev] extra) if needed, then run the whole test suite. Extra arguments go to pytest.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
bash scripts/setup.sh dev || exit 1  # the [dev] extra: pytest, shellcheck, transformers
bash scripts/ci/install_slurm.sh || true  # best effort: without it tests/slurm/test_real_slurm.py skips
.venv/bin/python -m pytest --durations=30 "$@"
status=$?
if [ "$status" -eq 5 ]; then
    echo "test: pytest collected no tests; that is a failure, not a pass" >&2
    exit 1
fi
exit "$status"
