#!/usr/bin/env bash
# Everything on the embedded demo set (offline, no data or weights to supply): Table 1/2
# shapes with by-pose and identification, embedder robustness (Table 3 shape) and
# verification on generated pairs, then one report: outputs/reports/demo/report.md.
# Extra arguments are passed to every job (e.g. dataset.limit=8).
source "$(dirname "$0")/_common.sh"
"$PYTHON" -m frontal_exp -m experiment=demo "$@"
"$PYTHON" -m frontal_exp experiment=demo_robustness "$@"
"$PYTHON" -m frontal_exp experiment=demo_verification "$@"
"$PYTHON" -m frontal_exp.report --experiment demo --output-root "$OUTPUT_ROOT"
