#!/usr/bin/env bash
# The norm-folding A/B (PAGEDLLM_FOLD_NORMS=1 against 0), as RESULTS.md's 2026-11-28 entry ran it:
# env_ab.sh with AB_VAR=PAGEDLLM_FOLD_NORMS. Usage: see env_ab.sh.
exec env AB_VAR=PAGEDLLM_FOLD_NORMS bash "$(dirname "$0")/env_ab.sh" "$@"
