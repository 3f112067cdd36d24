#!/usr/bin/env python3
"""One round of streamed generation against a running whaled, and what each generated token
cost: whaled's CPU, its runners' CPU, this client's CPU (reading every NDJSON chunk), and the
context switches of whaled and its runners.

    stream_cost.py PORT WHALED_PID TOKENS STREAMS

The model is `tiny` (the deepseek2 fixture, created by ab.sh), greedy, raw mode.
"""
import glob
import http.client
import json
import os
import sys
import threading
import time

PROMPTS = ["Hello", "One", "The sea", "Why", "Listen", "Numbers", "A story", "Rust"]


def tasks(pid, name):
    return glob.glob(f"/proc/{pid}/task/*/{name}")


def cpu(pid):
    total = 0
    for path in tasks(pid, "stat"):
        try:
            fields = open(path).read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError):
            pass
    return total / os.sysconf("SC_CLK_TCK")


def switches(pid):
    total = 0
    for path in tasks(pid, "status"):
        try:
            for line in open(path):
                if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def children(pid):
    found = []
    for path in tasks(pid, "children"):
        try:
            found += [int(child) for child in open(path).read().split()]
        except OSError:
            pass
    return found


def generate(port, tokens, prompt, out, index):
    connection = http.client.HTTPConnection("127.0.0.1", port)
    body = json.dumps({"model": "tiny", "prompt": prompt, "raw": True, "options": {
        "temperature": 0, "num_predict": tokens, "num_ctx": 1024, "speculative": "off"}})
    connection.request("POST", "/api/generate", body, {"Host": "127.0.0.1"})
    chunks, last = 0, None
    for line in connection.getresponse():
        chunks += 1
        last = json.loads(line)
    out[index] = (chunks, last["eval_count"])


def main():
    port, whaled, tokens, streams = (int(arg) for arg in sys.argv[1:5])

    def sample():
        runners = children(whaled)
        return (cpu(whaled), sum(cpu(p) for p in runners), time.process_time(),
                switches(whaled) + sum(switches(p) for p in runners))

    before = sample()
    started = time.time()
    out = {}
    threads = [threading.Thread(target=generate, args=(port, tokens, PROMPTS[i], out, i))
               for i in range(streams)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.time() - started
    after = sample()
    count = sum(evals for _, evals in out.values())
    chunks = sum(chunks for chunks, _ in out.values())
    per = [(a - b) / count for a, b in zip(after, before)]
    print(f"tokens {count} chunks {chunks} rate {count / wall:.0f} tok/s; per token: "
          f"whaled {per[0] * 1e6:.0f} us, runner {per[1] * 1e6:.0f} us, "
          f"client {per[2] * 1e6:.0f} us, switches {per[3]:.2f}")


main()
