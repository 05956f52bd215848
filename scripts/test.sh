#!/usr/bin/env bash
# Set up .venv (with the [dev] extra) if needed, then run the whole test suite. Extra arguments go to pytest.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
bash scripts/setup.sh dev || exit 1  # the [dev] extra: pytest, shellcheck, transformers
bash scripts/ci/install_slurm.sh || true  # best effort: without it tests/slurm/test_real_slurm.py skips
# Tests write checkpoints under the temp dir: about 2 GB at the peak on 2 workers (a passed
# test's files are removed at once: pyproject.toml). Say so now rather than fail half-way.
tmp=${TMPDIR:-/tmp}  # where pytest's tmp_path lives (Python's tempfile.gettempdir)
free_mb=$(df -Pm "$tmp" | awk 'NR == 2 {print $4}')
need_mb=${ALIA_TEST_DISK_MB:-3000}
if [ "${free_mb:-0}" -lt "$need_mb" ]; then
    echo "test: only ${free_mb} MB free in $tmp; the suite needs about ${need_mb} MB there for checkpoints." >&2
    echo "test: free some space, or point TMPDIR at a larger disk." >&2
    exit 1
fi
# Test files run in parallel (pytest-xdist), one worker per core up to 4. A file (or a directory
# sharing session fixtures) stays on one worker, longest first: see tests/conftest.py.
# ALIA_TEST_WORKERS=1 runs everything in one process.
workers=${ALIA_TEST_WORKERS:-$(nproc)}
[ "$workers" -le 4 ] || workers=4
parallel=()
[ "$workers" -le 1 ] || parallel=(-n "$workers")
.venv/bin/python -m pytest "${parallel[@]}" --durations=30 "$@"
status=$?
if [ "$status" -eq 5 ]; then
    echo "test: pytest collected no tests; that is a failure, not a pass" >&2
    exit 1
fi
exit "$status"
