#!/usr/bin/env bash
# Create .venv with Python 3.12 and install alia-train into it.
# Usage: bash scripts/setup.sh [EXTRAS]
#   bash scripts/setup.sh          the runtime only (what the demo needs)
#   bash scripts/setup.sh dev      plus the test tools (scripts/test.sh asks for this)
#   bash scripts/setup.sh dev,tb   several extras, comma-separated (see pyproject.toml)
#   ALIA_TORCH_INDEX_URL=URL bash scripts/setup.sh
#                                  torch from that index first: the build for the site's NVIDIA
#                                  driver (PyPI's newest torch is built for CUDA 13, which needs
#                                  driver 580 or newer); see docs/cluster.md
# Idempotent: installs only when pyproject.toml changed or an extra is asked for that is not
# installed yet. One .venv serves every order (demo then tests, tests then demo): the stamp
# records what is installed, and extras are never taken away.
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

# Sorted, comma-separated, without duplicates or blanks: "tb,dev,dev" -> "dev,tb".
normalize_extras() {
    tr ',' '\n' <<<"$1" | sed '/^$/d' | sort -u | paste -sd, -
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

# The stamp: "<sha256 of pyproject.toml> <installed extras or ->". A stamp of one field was
# written by the earlier set-up, which always installed [dev].
stamp=.venv/.alia-train-installed
# A torch index of its own is part of what is installed (without one: the hash of pyproject.toml).
want_sha=$({ cat pyproject.toml; [ -z "${ALIA_TORCH_INDEX_URL:-}" ] || echo "torch index $ALIA_TORCH_INDEX_URL"; } |
    sha256sum | cut -d' ' -f1)
want=$(normalize_extras "${1:-}")
have_sha="" have=""
if [ -f "$stamp" ]; then
    read -r have_sha have <"$stamp" || true
    [ -n "$have" ] || have=dev
    [ "$have" != "-" ] || have=""
fi
all=$(normalize_extras "$have,$want")
if [ "$have_sha" != "$want_sha" ] || [ "$all" != "$have" ]; then
    echo "setup: installing alia-train${all:+ [$all]} and its dependencies into .venv (torch is large: a few minutes)"
    .venv/bin/python -m pip install --quiet --upgrade pip
    if [ -n "${ALIA_TORCH_INDEX_URL:-}" ]; then
        torch_req=$(grep -o '"torch[^"]*"' pyproject.toml | tr -d '"')  # the range pyproject.toml allows
        echo "setup: $torch_req from $ALIA_TORCH_INDEX_URL"
        .venv/bin/python -m pip install --quiet --no-compile --index-url "$ALIA_TORCH_INDEX_URL" "$torch_req"
    fi
    # Bytecode is compiled afterwards on every core: pip compiles file by file on one, which
    # was half of the install's time (148 s -> 69 s + 48 s on 2 cores).
    .venv/bin/python -m pip install --quiet --no-compile -e ".${all:+[$all]}"
    echo "setup: compiling the installed packages' bytecode"
    .venv/bin/python -m compileall -q -j 0 "$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')" >/dev/null 2>&1 || true
    echo "$want_sha ${all:--}" >"$stamp"
fi
echo "setup: ready ($(.venv/bin/python --version)${all:+, extras: $all})"
