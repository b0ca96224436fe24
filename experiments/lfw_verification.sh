#!/usr/bin/env bash
# Reproduces lfw_verification (conf/experiment/lfw_verification.yaml), then writes outputs/reports/lfw_verification/report.md.
# Needs: LFW_ROOT (the lfw/ folder) with pairs.txt next to it. Extra arguments are Hydra overrides for every job.
source "$(dirname "$0")/_common.sh"
sweep_and_report lfw_verification lfw_verification "$@"
