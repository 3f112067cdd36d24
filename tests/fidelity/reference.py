"""Reference rendering for tests/tests/fidelity.rs: DeepSeek's official chat template, rendered
the way Hugging Face transformers renders it (Jinja2, sandboxed, trim_blocks and lstrip_blocks)
and tokenized with the official tokenizer (the `tokenizers` library).

stdin: {"tokenizer_dir": DIR, "conversations": [{"messages": [...], "add_generation_prompt": bool}]}
stdout: [{"text": str, "ids": [int]}] in the same order.
"""

import json
import sys

from jinja2.exceptions import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer


def raise_exception(message):
    raise TemplateError(message)


def token_text(value):
    return value.get("content") if isinstance(value, dict) else value


def main():
    request = json.load(sys.stdin)
    directory = request["tokenizer_dir"]
    with open(f"{directory}/tokenizer_config.json", encoding="utf-8") as file:
        config = json.load(file)
    tokenizer = Tokenizer.from_file(f"{directory}/tokenizer.json")
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    template = env.from_string(config["chat_template"])
    out = []
    for conversation in request["conversations"]:
        text = template.render(
            messages=conversation["messages"],
            add_generation_prompt=conversation.get("add_generation_prompt", True),
            bos_token=token_text(config["bos_token"]),
            eos_token=token_text(config["eos_token"]),
        )
        ids = tokenizer.encode(text, add_special_tokens=False).ids
        out.append({"text": text, "ids": ids})
    json.dump(out, sys.stdout, ensure_ascii=False)


if __name__ == "__main__":
    main()
