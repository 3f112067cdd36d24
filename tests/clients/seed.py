"""Scripts as people write them for Ollama and for DeepSeek's API, run against whaled with only
the address changed (OLLAMA_HOST for ollama-python, base_url for the openai client). Prints one
JSON object with what came back; tests/tests/openai.rs checks it.

usage: OLLAMA_HOST=127.0.0.1:PORT python3 seed.py http://127.0.0.1:PORT
"""

import json
import sys

import ollama
from openai import OpenAI

base = sys.argv[1]
out = {}

# Ollama's README, with a short answer.
response = ollama.chat(
    model="deepseek-r1:14b",
    messages=[{"role": "user", "content": "Why is the sky blue?"}],
    options={"temperature": 0, "num_predict": 8},
)
out["ollama"] = {
    "role": response.message.role,
    "content": response.message.content,
    "thinking": response.message.thinking,
    "done": response.done,
    "eval_count": response.eval_count,
}
parts = list(
    ollama.chat(
        model="deepseek-r1:14b",
        messages=[{"role": "user", "content": "Why is the sky blue?"}],
        options={"temperature": 0, "num_predict": 8},
        stream=True,
    )
)
out["ollama_stream"] = {
    "parts": len(parts),
    "thinking": "".join(p.message.thinking or "" for p in parts),
    "content": "".join(p.message.content or "" for p in parts),
    "done": parts[-1].done,
}

# DeepSeek's reasoning-model guide: a first turn, then its answer (content only) and a second.
client = OpenAI(api_key="<DeepSeek API Key>", base_url=base + "/v1")
messages = [{"role": "user", "content": "9.11 and 9.8, which is greater?"}]
first = client.chat.completions.create(
    model="deepseek-r1-zero", messages=messages, max_tokens=8, temperature=0
)
reasoning_content = first.choices[0].message.reasoning_content
content = first.choices[0].message.content
messages.append({"role": "assistant", "content": content})
messages.append({"role": "user", "content": "How many Rs are there in the word 'strawberry'?"})
second = client.chat.completions.create(
    model="deepseek-r1-zero", messages=messages, max_tokens=8, temperature=0
)
out["openai"] = {
    "model": first.model,
    "reasoning_content": reasoning_content,
    "content": content,
    "second_model": second.model,
    "second_reasoning": second.choices[0].message.reasoning_content,
    "second_prompt_tokens": second.usage.prompt_tokens,
    "first_prompt_tokens": first.usage.prompt_tokens,
}
print(json.dumps(out))
