#!/usr/bin/env bash
# Reproduces table2_enhancers (conf/experiment/table2_enhancers.yaml), then writes outputs/reports/table2_enhancers/report.md.
# Needs: BIWI_ROOT, LivePortrait + GFPGAN weights and the official insightface packs. Extra arguments are Hydra overrides for every job.
source "$(dirname "$0")/_common.sh"
sweep_and_report table2_enhancers table2_enhancers "$@"
