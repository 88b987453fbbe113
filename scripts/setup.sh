#!/usr/bin/env bash
# Creates .venv with Python 3.10 and installs the pinned lock file plus this project (editable).
# Idempotent: re-runs only when requirements.lock or pyproject.toml changed since the last install.
set -euo pipefail
cd "$(dirname "$0")/.."

find_python310() {
  local candidate
  for candidate in "${PYTHON310:-}" python3.10; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 10)' 2>/dev/null; then
      command -v "$candidate"; return 0
    fi
  done
  if command -v pyenv >/dev/null 2>&1; then
    for candidate in "$(pyenv root)"/versions/3.10*/bin/python3.10; do
      [ -x "$candidate" ] && { echo "$candidate"; return 0; }
    done
  fi
  for candidate in /usr/bin/python3.10 /usr/local/bin/python3.10; do
    [ -x "$candidate" ] && { echo "$candidate"; return 0; }
  done
  return 1
}

stamp=.venv/.installed
if [ -f "$stamp" ] && [ "$stamp" -nt requirements.lock ] && [ "$stamp" -nt pyproject.toml ]; then
  exit 0
fi

if [ ! -x .venv/bin/python ]; then
  if ! py=$(find_python310); then
    echo "setup: Python 3.10 not found (looked at \$PYTHON310, python3.10 on PATH, \$(pyenv root)/versions/3.10*," >&2
    echo "       /usr/bin, /usr/local/bin). TFX 1.16 needs exactly Python 3.10: install it, or set PYTHON310=/path/to/python3.10." >&2
    exit 1
  fi
  echo "setup: creating .venv with $py"
  "$py" -m venv .venv
fi
echo "setup: installing requirements.lock into .venv (a fresh install takes ~3 min, 3.3 GB)"
.venv/bin/python -m pip install --quiet pip==26.3 setuptools==84.2.1 wheel==0.48.0
.venv/bin/python -m pip install --quiet --no-deps -r requirements.lock
.venv/bin/python -m pip install --quiet --no-deps --no-build-isolation -e .
.venv/bin/python -m pip check
touch "$stamp"
echo "setup: done"
