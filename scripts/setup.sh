#!/usr/bin/env bash
# Create .venv with Python 3.12 and install alia-train with its test dependencies.
# Usage: bash scripts/setup.sh        (idempotent: re-installs only when pyproject.toml changed)
set -euo pipefail
cd "$(dirname "$0")/.."

find_python312() {
    local candidate
    for candidate in "${ALIA_PYTHON:-}" python3.12 /usr/local/bin/python3.12 /usr/bin/python3.12 \
        "$HOME"/.pyenv/versions/3.12*/bin/python3.12 /opt/python*/bin/python3.12; do
        [ -n "$candidate" ] || continue
        # A pyenv shim may exist yet fail; run it to be sure it is a working 3.12.
        if "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' >/dev/null 2>&1; then
            command -v "$candidate" 2>/dev/null || echo "$candidate"
            return 0
        fi
    done
    return 1
}

if [ ! -x .venv/bin/python ]; then
    if ! PY=$(find_python312); then
        echo "setup: no Python 3.12 interpreter found (alia-train needs Python >= 3.12 for megatron-core 0.19)." >&2
        echo "setup: install one (e.g. 'pyenv install 3.12') or point ALIA_PYTHON at it." >&2
        exit 1
    fi
    echo "setup: creating .venv with $PY"
    "$PY" -m venv .venv
fi

stamp=.venv/.alia-train-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "setup: installing alia-train and its dependencies into .venv (torch is large: a few minutes)"
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e ".[dev]"
    echo "$want" > "$stamp"
fi
echo "setup: ready ($(.venv/bin/python --version))"
