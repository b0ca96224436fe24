#!/usr/bin/env bash
# Reproduces largeyaw (conf/experiment/largeyaw.yaml), then writes outputs/reports/largeyaw/report.md.
# Needs: LARGEYAW_ROOT (or dataset.root=...), a folder per person with a manifest.csv naming each GT. Extra arguments are Hydra overrides for every job.
source "$(dirname "$0")/_common.sh"
sweep_and_report largeyaw largeyaw "$@"
