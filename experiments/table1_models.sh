#!/usr/bin/env bash
# Reproduces table1_models (conf/experiment/table1_models.yaml), then writes outputs/reports/table1_models/report.md.
# Needs: BIWI_ROOT, LFW_ROOT and the LivePortrait weights. Extra arguments are Hydra overrides for every job.
source "$(dirname "$0")/_common.sh"
sweep_and_report table1_models table1_models "$@"
