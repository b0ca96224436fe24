#!/usr/bin/env bash
# Reproduces table3_robustness (conf/experiment/table3_robustness.yaml), then writes outputs/reports/table3_robustness/report.md.
# Needs: BIWI_ROOT and the official insightface packs (buffalo_l, antelopev2, RetinaFace-R50). Extra arguments are Hydra overrides for every job.
source "$(dirname "$0")/_common.sh"
sweep_and_report table3_robustness table3_robustness "$@"
