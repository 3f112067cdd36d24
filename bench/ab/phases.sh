#!/bin/bash
# Where a decode step's time goes inside one build of whaled, from its engine's debug log
# ("decode steps": batch, decode, sample, output per step; host_share is all but the decode):
#   bench/ab/phases.sh WHALED STREAMS OPTIONS_JSON [ROUNDS]
# runs ROUNDS (default 4) rounds of STREAMS concurrent 512-token raw generations on the tiny
# deepseek2 fixture and prints a line per round (the engine reports when it goes idle).
# Environment reaches whaled (WHALE_NUM_THREADS, default 2; WHALE_SAMPLE_THREADS, ...).
# Example, R1's chain at 8 streams:
#   bench/ab/phases.sh target/release/whaled 8 '{"temperature":0.6,"top_p":0.95,"seed":42}'
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
fixture=$here/../../.cache/fixtures/generated/tiny-deepseek2-v3.gguf
digest=$(sha256sum "$fixture" | cut -d' ' -f1)
work=$(mktemp -d)
port=${PORT:-11603}
trap 'kill ${pid:-} 2>/dev/null; rm -rf "$work"' EXIT
WHALE_MODELS=$work WHALE_HOST=127.0.0.1:$port WHALE_NUM_THREADS=${WHALE_NUM_THREADS:-2} \
  WHALE_NUM_PARALLEL=$2 WHALE_KEEP_ALIVE=-1 WHALE_LOG=whale_daemon=debug "$1" > "$work/log" 2>&1 &
pid=$!
sleep 2
url=http://127.0.0.1:$port
curl -sf -X POST --data-binary @"$fixture" "$url/api/blobs/sha256:$digest" > /dev/null
curl -sf "$url/api/create" -d "{\"model\":\"tiny\",\"files\":{\"model.gguf\":\"sha256:$digest\"},\"stream\":false}" > /dev/null
python3 - "$url" "$2" "$3" "${4:-4}" <<'PY'
import json, sys, threading, urllib.request
url, streams, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[4])
options = {"num_predict": 512, "num_ctx": 1024, "speculative": "off", **json.loads(sys.argv[3])}
def generate(prompt):
    body = json.dumps({"model": "tiny", "prompt": prompt, "raw": True, "stream": False,
                       "options": options}).encode()
    urllib.request.urlopen(urllib.request.Request(url + "/api/generate", body)).read()
for round in range(rounds):
    threads = [threading.Thread(target=generate, args=(f"Hello {i}",)) for i in range(streams)]
    [thread.start() for thread in threads]
    [thread.join() for thread in threads]
PY
# The engine reports when it goes idle; a last short request makes it report the last round.
curl -sf "$url/api/generate" -d '{"model":"tiny","prompt":"x","raw":true,"stream":false,"options":{"num_predict":1}}' > /dev/null
sleep 0.5
grep -o 'decode steps steps=[0-9]* tokens=[0-9]*.*host_share="[0-9.]*%"' "$work/log" | grep -v ' steps=[0-9] '
