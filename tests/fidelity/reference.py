"""Reference rendering for tests/tests/fidelity.rs: a DeepSeek chat template, rendered the way
Hugging Face transformers renders chat templates (Jinja2, sandboxed, trim_blocks and
lstrip_blocks, the loopcontrols extension, its own `tojson`, `raise_exception` and
`strftime_now`) and tokenized with the official tokenizer (the `tokenizers` library).

stdin: {"tokenizer_dir": DIR, "template_file": FILE or null (then the tokenizer_config.json
        chat_template), "variables": {...} (extra template variables, e.g. "thinking"),
        "conversations": [{"messages": [...], "tools": [...] or null,
                           "add_generation_prompt": bool}]}
stdout: [{"text": str, "ids": [int]}] in the same order.

Besides transformers' globals the templates get `from_json` (json.loads), a filter of
llama.cpp's template engine that the V3.2 and V4 templates kept there use.
"""

import datetime
import json
import sys

from jinja2.exceptions import TemplateError
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer


def raise_exception(message):
    raise TemplateError(message)


def strftime_now(format):
    return datetime.datetime.now().strftime(format)


def tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(
        value,
        ensure_ascii=ensure_ascii,
        indent=indent,
        separators=separators,
        sort_keys=sort_keys,
    )


def token_text(value):
    return value.get("content") if isinstance(value, dict) else value


def main():
    request = json.load(sys.stdin)
    directory = request["tokenizer_dir"]
    with open(f"{directory}/tokenizer_config.json", encoding="utf-8") as file:
        config = json.load(file)
    source = config["chat_template"]
    if request.get("template_file"):
        with open(request["template_file"], encoding="utf-8") as file:
            source = file.read()
    tokenizer = Tokenizer.from_file(f"{directory}/tokenizer.json")
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols]
    )
    env.filters["tojson"] = tojson
    env.filters["from_json"] = json.loads
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    template = env.from_string(source)
    out = []
    for conversation in request["conversations"]:
        variables = dict(request.get("variables") or {})
        if conversation.get("tools"):
            variables["tools"] = conversation["tools"]
        text = template.render(
            messages=conversation["messages"],
            add_generation_prompt=conversation.get("add_generation_prompt", True),
            bos_token=token_text(config["bos_token"]),
            eos_token=token_text(config["eos_token"]),
            **variables,
        )
        ids = tokenizer.encode(text, add_special_tokens=False).ids
        out.append({"text": text, "ids": ids})
    json.dump(out, sys.stdout, ensure_ascii=False)


if __name__ == "__main__":
    main()
