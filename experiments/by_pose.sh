#!/usr/bin/env bash
# Reproduces by_pose (conf/experiment/by_pose.yaml), then writes outputs/reports/by_pose/report.md.
# Needs: BIWI_ROOT. Extra arguments are Hydra overrides for every job.
source "$(dirname "$0")/_common.sh"
sweep_and_report by_pose by_pose "$@"
