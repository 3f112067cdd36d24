#!/bin/bash
# Two builds of whaled side by side on the tiny deepseek2 fixture, in alternating rounds of
# stream_cost.py: `bench/ab/ab.sh OLD_WHALED NEW_WHALED` (ROUNDS, STREAMS: defaults 10, 1).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
fixture=$here/../../.cache/fixtures/generated/tiny-deepseek2-v3.gguf
digest=$(sha256sum "$fixture" | cut -d' ' -f1)
streams=${STREAMS:-1}
work=$(mktemp -d)
declare -A port=([old]=11601 [new]=11602) binary=([old]=$1 [new]=$2) pid
trap 'kill ${pid[old]:-} ${pid[new]:-} 2>/dev/null; rm -rf "$work"' EXIT
for side in old new; do
  mkdir -p "$work/$side"
  WHALE_MODELS=$work/$side WHALE_HOST=127.0.0.1:${port[$side]} WHALE_NUM_THREADS=2 \
    WHALE_NUM_PARALLEL=$streams "${binary[$side]}" > "$work/$side.log" 2>&1 &
  pid[$side]=$!
done
sleep 2
for side in old new; do
  url=http://127.0.0.1:${port[$side]}
  curl -sf -X POST --data-binary @"$fixture" "$url/api/blobs/sha256:$digest" > /dev/null
  curl -sf "$url/api/create" -d "{\"model\":\"tiny\",\"files\":{\"model.gguf\":\"sha256:$digest\"},\"stream\":false}" > /dev/null
  python3 "$here/stream_cost.py" "${port[$side]}" "${pid[$side]}" 64 "$streams" > /dev/null
done
for round in $(seq "${ROUNDS:-10}"); do
  for side in old new; do
    echo "$round $side $(python3 "$here/stream_cost.py" "${port[$side]}" "${pid[$side]}" 512 "$streams")"
  done
done
