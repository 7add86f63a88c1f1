# Sourced by scripts/landscope and scripts/test: make sure .venv holds the project and its pinned
# dependencies. Re-installs only when pyproject.toml or constraints.txt changed since last time.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${LANDSCOPE_VENV:-$root/.venv}"
stamp="$venv/.landscope-installed"
want="$(cat "$root/pyproject.toml" "$root/constraints.txt" | sha256sum | cut -d' ' -f1)"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "landscope: installing into $venv (first run, or dependencies changed) ..." >&2
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip >&2
  # constraints.txt pins torch to the CPU-sized build; see pyproject.toml.
  "$venv/bin/python" -m pip install --quiet -c "$root/constraints.txt" -e "$root[dev]" >&2
  echo "$want" > "$stamp"
fi
export PATH="$venv/bin:$PATH"
