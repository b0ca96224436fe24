#!/usr/bin/env bash
# Reproduces by_pose_all_frames (conf/experiment/by_pose_all_frames.yaml), then writes outputs/reports/by_pose_all_frames/report.md.
# Needs: BIWI_ROOT. Extra arguments are Hydra overrides for every job.
source "$(dirname "$0")/_common.sh"
sweep_and_report by_pose_all_frames by_pose_all_frames "$@"
