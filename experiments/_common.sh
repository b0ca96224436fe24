# Shared by the table scripts: run from the repository root with the project's Python.
set -euo pipefail
cd "$(dirname "$0")/.."
# the project's venv when there is one (README set-up), else the active python; PYTHON=... overrides
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python; fi
fi
# every job and the report use one output root (and so one MLflow database)
OUTPUT_ROOT="${FRONTAL_EXP_OUTPUTS:-outputs}"
export FRONTAL_EXP_OUTPUTS="$OUTPUT_ROOT"

sweep_and_report() {  # sweep_and_report RECIPE [EXPERIMENT] [extra overrides...]
  local recipe="$1" experiment="${2:-$1}"
  shift $(( $# >= 2 ? 2 : 1 ))
  "$PYTHON" -m frontal_exp -m "experiment=$recipe" "$@"
  "$PYTHON" -m frontal_exp.report --experiment "$experiment" --output-root "$OUTPUT_ROOT"
}
