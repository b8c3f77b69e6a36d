"""llama-cpp-python called directly, in its own process, driven by JSON lines on stdin.

The reference the embedded engine is measured against: the same GGUF, threads and context size, no
HTTP. It stays loaded between commands so runs can interleave with the HTTP servers. Commands (one
JSON object per line, one JSON answer per line):

- ``{"op": "chat", "messages": [...], "max_tokens": N}``: ``create_chat_completion(stream=True)``,
  greedy; answers the text and the times of the first and last content chunk.
- ``{"op": "generate", "messages": [...], "max_tokens": N}``: the chat template rendered once, then
  the low-level ``Llama.generate`` loop (no chat-completion layer): the engine's ceiling.
- ``{"op": "prompt_tokens", "messages": [...]}`` and ``{"op": "tokens", "text": "..."}``: counts, so
  every engine's output is counted with the same tokenizer.

    python -m bench.engine_direct --model model.gguf --threads 2 --n-ctx 8192
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from llama_cpp import Llama, llama_vocab_is_eog
from llama_cpp.llama_chat_format import Jinja2ChatFormatter


class Direct:
    def __init__(self, model: str, threads: int, n_ctx: int) -> None:
        self.llm = Llama(
            model_path=model,
            n_ctx=n_ctx,
            n_threads=threads,
            n_threads_batch=threads,
            n_batch=512,
            verbose=False,
        )
        llm = self.llm
        self.formatter = Jinja2ChatFormatter(
            template=llm.metadata["tokenizer.chat_template"],
            eos_token=llm._model.token_get_text(llm.token_eos()),
            bos_token=llm._model.token_get_text(llm.token_bos()) if llm.token_bos() >= 0 else "",
        )

    def prompt(self, messages: list[dict[str, Any]]) -> list[int]:
        text = self.formatter(messages=messages).prompt  # type: ignore[arg-type]
        return self.llm.tokenize(text.encode(), add_bos=False, special=True)

    def tokens(self, text: str) -> int:
        return len(self.llm.tokenize(text.encode(), add_bos=False, special=False)) if text else 0

    def chat(self, messages: list[dict[str, Any]], max_tokens: int) -> dict[str, Any]:
        started = time.perf_counter()
        first = last = 0.0
        parts: list[str] = []
        stream = self.llm.create_chat_completion(
            messages=messages,  # type: ignore[arg-type]
            max_tokens=max_tokens,
            temperature=0.0,
            stream=True,
        )
        for chunk in stream:
            content = chunk["choices"][0]["delta"].get("content")  # type: ignore[index, union-attr]
            if isinstance(content, str) and content:
                last = time.perf_counter()
                first = first or last
                parts.append(content)
        return {"started": started, "first": first, "last": last, "end": time.perf_counter(), "text": "".join(parts)}

    def generate(self, messages: list[dict[str, Any]], max_tokens: int) -> dict[str, Any]:
        started = time.perf_counter()
        tokens = self.prompt(messages)
        first = last = 0.0
        out: list[int] = []
        vocab = self.llm._model.vocab
        for token in self.llm.generate(tokens, temp=0.0, top_k=1):
            if llama_vocab_is_eog(vocab, token):
                break
            last = time.perf_counter()
            first = first or last
            out.append(token)
            if len(out) >= max_tokens:
                break
        text = self.llm.detokenize(out).decode("utf-8", errors="replace")
        return {"started": started, "first": first, "last": last, "end": time.perf_counter(), "text": text}

    def handle(self, command: dict[str, Any]) -> dict[str, Any]:
        op = command["op"]
        if op == "chat":
            return self.chat(command["messages"], int(command["max_tokens"]))
        if op == "generate":
            return self.generate(command["messages"], int(command["max_tokens"]))
        if op == "prompt_tokens":
            return {"count": len(self.prompt(command["messages"]))}
        if op == "tokens":
            return {"count": self.tokens(command["text"])}
        raise ValueError(f"unknown op {op!r}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n-ctx", type=int, default=8192)
    args = parser.parse_args(argv)
    direct = Direct(args.model, args.threads, args.n_ctx)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            answer = direct.handle(json.loads(line))
        except Exception as error:  # answered, so the harness can say what failed
            answer = {"error": repr(error)}
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
