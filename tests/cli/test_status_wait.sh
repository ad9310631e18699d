#!/usr/bin/env bash
# The scripting workflow from the README: start `mlsrv serve` in the background, block on
# `mlsrv status --wait AVAILABLE`, predict over REST and gRPC, stop the server, and check that a
# stopped server gives exit code 3. Every step is bounded by `timeout`.
#
# Environment: PYTHON (interpreter with mlsrv installed), MODEL_DIR (half_plus_two base path),
# REST_PORT and GRPC_PORT (free ports), LOG (server log file).
set -euo pipefail

PYTHON=${PYTHON:-python3}
: "${MODEL_DIR:?}" "${REST_PORT:?}" "${GRPC_PORT:?}"
LOG=${LOG:-/dev/null}
MAIN='from mlsrv.cli.app import main; main()'
REST="--rest=http://127.0.0.1:${REST_PORT}"
GRPC="--grpc=127.0.0.1:${GRPC_PORT}"
BODY='{"instances": [[1.0], [2.0]]}'
EXPECTED='{"predictions":[[2.5],[3.0]]}'

"$PYTHON" -c "$MAIN" serve --model_name=half_plus_two --model_base_path="$MODEL_DIR" \
    --host=127.0.0.1 --port="$GRPC_PORT" --rest_api_port="$REST_PORT" >"$LOG" 2>&1 &
SERVER=$!
trap 'kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true' EXIT

# Connection refused while the server starts counts as "not ready yet", not as an error.
timeout 90 "$PYTHON" -c "$MAIN" status -m half_plus_two "$REST" --wait AVAILABLE --timeout 60 -q

out=$(timeout 30 "$PYTHON" -c "$MAIN" predict -m half_plus_two "$REST" -d "$BODY" --json)
[ "$out" = "$EXPECTED" ] || { echo "REST predict printed: $out" >&2; exit 1; }
out=$(timeout 60 "$PYTHON" -c "$MAIN" predict -m half_plus_two "$GRPC" -d "$BODY" --json)
[ "$out" = "$EXPECTED" ] || { echo "gRPC predict printed: $out" >&2; exit 1; }

kill -TERM "$SERVER"
timeout 30 tail --pid="$SERVER" -f /dev/null
trap - EXIT

set +e
timeout 30 "$PYTHON" -c "$MAIN" status -m half_plus_two "$REST" 2>/dev/null
rc=$?
set -e
[ "$rc" -eq 3 ] || { echo "status on a stopped server exited $rc, expected 3" >&2; exit 1; }
echo "status-wait script: ok"
