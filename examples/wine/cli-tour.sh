#!/usr/bin/env bash
# A tour of the CLI: the Azure ML walkthrough's steps 1–15 (../shared/seed/azureml-walkthrough.md)
# with `cairn` commands instead of Python, on a throw-away server with embedded defaults (SQLite,
# local files). The project's main job, `scripts/demo.sh` (`cairn demo`), runs the same steps as
# the walkthrough's own Python through the azureml compatibility layer.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

say() { printf '\n== %s\n' "$*"; }

cargo build --quiet --workspace --bins
CAIRN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/cairn"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/cairn-demo.XXXXXX")"
LOG="$WORK/server.log"
cleanup() {
    [ -n "${SERVER_PID:-}" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
    [ "${KEEP:-0}" = 1 ] || rm -rf "$WORK"
}
trap cleanup EXIT

say "Starting a throw-away Cairn server (data in $WORK/data)"
# Environments are built with uv (installed by scripts/setup.sh); its cache is shared between runs.
[ -x .venv-tools/bin/uv ] || scripts/setup.sh
export CAIRN_UV="$ROOT/.venv-tools/bin/uv" UV_CACHE_DIR="${UV_CACHE_DIR:-$ROOT/.cache/uv}"
"$CAIRN" server --data-dir "$WORK/data" --listen 127.0.0.1:0 2>"$LOG" &
SERVER_PID=$!
for _ in $(seq 1 100); do
    grep -q "listening on" "$LOG" 2>/dev/null && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$LOG"; exit 1; }
    sleep 0.1
done
CAIRN_URL="$(grep -o 'listening on http://[0-9.:]*' "$LOG" | head -n 1 | sed 's/listening on //')"
for _ in $(seq 1 50); do [ -s "$WORK/data/admin-token" ] && break; sleep 0.1; done
CAIRN_TOKEN="$(cat "$WORK/data/admin-token")"
export CAIRN_URL CAIRN_TOKEN
echo "server at $CAIRN_URL"

say "Step 1 — create the workspace"
"$CAIRN" workspace create azureml_workspace --description "the walkthrough's workspace"
"$CAIRN" workspace show azureml_workspace

say "Step 2 — upload the wine data to the default datastore (overwrite, progress)"
"$CAIRN" datastore upload -w azureml_workspace examples/wine/winedata --target-path winedata --overwrite
"$CAIRN" datastore ls -w azureml_workspace winedata
"$CAIRN" datastore download -w azureml_workspace winedata --dest "$WORK/check" --quiet
cmp examples/wine/winedata/winequality_red.csv "$WORK/check/winedata/winequality_red.csv"
echo "downloaded copy is identical"

export CAIRN_WORKSPACE=azureml_workspace
say "Steps 3–4 — the code folder and the compute cluster (0 to 2 nodes)"
ls examples/wine/winecode
"$CAIRN" compute create -f examples/wine/compute.yml

say "Step 6 — the environment (conda's scikit-learn, pandas), built once and cached"
"$CAIRN" env create -f examples/wine/env.yml
"$CAIRN" env build wine-experiment-env | tail -n 3

say "Steps 5, 7, 8 — submit train.py as a run of experiment wine_expt, stream its log"
"$CAIRN" job submit -f examples/wine/job.yml --stream
RUN="$("$CAIRN" job list -e wine_expt -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')"

say "The run's metrics (run.get_metrics()) and its kept outputs"
"$CAIRN" run metrics "$RUN"
"$CAIRN" job download "$RUN" --dest "$WORK/run"
ls -l "$WORK/run/$RUN/outputs"

say "Step 9 — register the run's model (run.register_model): a name, an id and a version"
"$CAIRN" model register --name wine_model --run "$RUN" --path outputs/wine_model.pkl \
    --tag area=wine --tag type=regression --framework sklearn --description "wine quality, decision tree" -o json >/dev/null
"$CAIRN" model show wine_model:1

say "The same run through the MLflow API (MLFLOW_TRACKING_URI is printed by workspace show)"
"$CAIRN" workspace show azureml_workspace | grep -i mlflow

say "Steps 10–13 — the inference script, its environment and the endpoint"
cat examples/wine/scorecode/score.py | sed -n '/^def init/,$p'
"$CAIRN" endpoint create -f examples/wine/endpoint.yml -o json >/dev/null
"$CAIRN" endpoint show wine-endpoint

say "Step 14 — deploy the model (replicas of score.py behind the scoring URI)"
"$CAIRN" deployment create -f examples/wine/deployment.yml --all-traffic --wait

say "Step 15 — get the keys and POST the walkthrough's sample"
KEY="$("$CAIRN" endpoint get-keys wine-endpoint -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["primary_key"])')"
SCORING_URI="$("$CAIRN" endpoint show wine-endpoint -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["scoring_uri"])')"
echo "POST $SCORING_URI"
cat examples/wine/score-request.json
curl -sS --fail-with-body -H "Authorization: Bearer $KEY" -H "Content-Type: application/json" \
    --data @examples/wine/score-request.json "$SCORING_URI"
echo
