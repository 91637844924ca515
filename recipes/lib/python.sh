# The Python the recipes run (source it, then `choose_python || exit 2`: it sets PYTHON). In order:
#   PYTHON, when set (it must find verl);
#   python3, when it finds verl;
#   this repository's .venv/bin/python (what `make setup` builds), when it is there: said in one line on stderr;
#   else one line on stderr that says what to do, and a failure.
# "Finds verl" asks importlib.util.find_spec, which does not import it (importing verl loads torch: seconds).
SSPO_REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

finds_verl() {  # finds_verl <python>
  "$1" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("verl") is None)' 2>/dev/null
}

choose_python() {
  local me="${0##*/}" venv="$SSPO_REPO_DIR/.venv/bin/python"
  local fix="run \`make setup\` in $SSPO_REPO_DIR (it builds .venv), or set PYTHON=/path/to/python"
  fix+=" (one with verl and sspo-verl)"
  if [ -n "${PYTHON:-}" ]; then
    if ! command -v "$PYTHON" >/dev/null 2>&1; then
      echo "$me: error: PYTHON=$PYTHON: no such command; $fix" >&2
      return 2
    fi
    if ! finds_verl "$PYTHON"; then
      echo "$me: error: PYTHON=$PYTHON cannot import verl; $fix" >&2
      return 2
    fi
    return 0
  fi
  if command -v python3 >/dev/null 2>&1 && finds_verl python3; then
    export PYTHON=python3
  elif [ -x "$venv" ] && finds_verl "$venv"; then
    export PYTHON="$venv"
    echo "$me: python3 cannot import verl: using this repository's $venv (set PYTHON to choose another)" >&2
  else
    echo "$me: error: python3 cannot import verl, and there is no $venv; $fix" >&2
    return 2
  fi
}
