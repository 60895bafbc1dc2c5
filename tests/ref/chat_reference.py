#!/usr/bin/python3
"""Reference renderings of chat templates: each conversation of a cases file through a
tokenizer_config.json's chat_template with Jinja, as transformers' apply_chat_template does
(ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, loopcontrols, raise_exception,
tojson, the tokenizer's special tokens as variables, continue_final_message cutting after the
final message). Test tooling only; shares nothing with ctrace.

    chat_reference.py TOKENIZER_CONFIG CASES_JSON

Prints one line per case: the rendered text as a JSON string, or ERROR and the message.
"""
import json
import sys

import jinja2
import jinja2.ext
import jinja2.sandbox


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def render(template, special, case):
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                                       extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    add = case.get("add_generation_prompt", False)
    cont = case.get("continue_final_message", False)
    if add and cont:
        raise ValueError("continue_final_message and add_generation_prompt are not compatible")
    kwargs = dict(special)
    if "enable_thinking" in case:
        kwargs["enable_thinking"] = case["enable_thinking"]
    chat = case["messages"]
    text = env.from_string(template).render(messages=chat, tools=None, documents=None, add_generation_prompt=add,
                                            **kwargs)
    if cont:
        final = chat[-1]["content"]
        if isinstance(final, (list, tuple)):
            final = [b["text"] for b in final if "text" in b][-1]
        if final.strip() not in text:
            raise ValueError("the final message does not appear in the chat")
        at = text.rindex(final.strip())
        if text[at:at + len(final.lstrip())] == final:
            text = text[:at + len(final.lstrip())]
        else:
            text = text[:at + len(final.strip())]
    return text


def main():
    cfg = json.load(open(sys.argv[1]))
    cases = json.load(open(sys.argv[2]))
    special = {}
    for k in ("bos_token", "eos_token", "unk_token", "pad_token"):
        v = cfg.get(k)
        if isinstance(v, dict):
            v = v.get("content")
        if v is not None:
            special[k] = v
    for case in cases:
        try:
            print(json.dumps(render(cfg["chat_template"], special, case)))
        except Exception as e:   # a template that refuses the conversation
            print("ERROR " + str(e).replace("\n", " "))


main()
