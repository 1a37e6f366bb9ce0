#!/usr/bin/env bash
# Create (once) the project's virtual environment in .venv and install the study into it.
# Set AGIQA_PYTHON to an existing interpreter (e.g. a conda env's python) to skip the venv.
# Prints the path of the python to use on its last line.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -n "${AGIQA_PYTHON:-}" ]]; then
  py="$(command -v "$AGIQA_PYTHON")" || { echo "setup: AGIQA_PYTHON=$AGIQA_PYTHON not found" >&2; exit 2; }
  [[ "$py" == /* ]] || py="$(cd "$(dirname "$py")" && pwd)/$(basename "$py")"  # absolute, links kept
  echo "$py"
  exit 0
fi
venv="$here/.venv"
py="$venv/bin/python"
stamp="$venv/.agiqa-installed"
want="$(cat "$here/pyproject.toml" | sha256sum | cut -c1-16)"
if [[ -x "$py" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  echo "$py"
  exit 0
fi
{
  echo "[setup] creating $venv (first run only; torch is a large download with internet)"
  [[ -x "$py" ]] || python3 -m venv "$venv"
  "$py" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  if ! "$py" -c "import torch, torchvision" >/dev/null 2>&1; then
    # Pinned pair: on this project's offline machines both come from local files.
    # shellcheck disable=SC2086  # the spec is a list of requirements
    "$py" -m pip install -q ${AGIQA_TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1}
  fi
  "$py" -m pip install -q -e "$here[test]"
  "$py" -m ipykernel install --sys-prefix --name python3 >/dev/null
  echo "$want" > "$stamp"
  echo "[setup] done"
} >&2
echo "$py"
