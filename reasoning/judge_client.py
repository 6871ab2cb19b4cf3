"""The judge's OpenAI-compatible backend: vLLM, llama.cpp's server, Ollama or a hosted API.

Standard library only (urllib + threads). Requests go `concurrency` at a time,
each with a timeout, retried with exponential backoff on a refused or dropped
connection, a timeout, HTTP 429 or 5xx; any other HTTP error is not retried.
A request that still fails stops the run with one line naming the endpoint.

The API key is read from the environment variable `api_key_env` names, at
request time, and only ever goes into the Authorization header: it is not part
of `identity` (so not of cache keys, judgments, evidence or the DVC lock) and no
error message quotes a header.
"""

from __future__ import annotations

import json
import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from reasoning.judge import JudgeError

APIS = ("completions", "chat")
RETRY_STATUS = {429, 500, 502, 503, 504}


class OpenAIBackend:
    """`complete(prompts)` over `<base_url>/completions` (the rendered text as it is) or `/chat/completions`
    (the text as one user message; the server applies the model's chat template)."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api: str = "completions",
        api_key_env: str | None = None,
        concurrency: int = 4,
        timeout: float = 60.0,
        retries: int = 2,
        backoff: float = 1.0,
    ):
        if api not in APIS:
            raise JudgeError(f"judge.api: {api!r} (expected one of {', '.join(APIS)})")
        self.base_url = base_url.rstrip("/")
        self.model, self.api, self.api_key_env = model, api, api_key_env
        self.concurrency, self.timeout, self.retries, self.backoff = max(1, concurrency), timeout, retries, backoff
        self.url = f"{self.base_url}/{'chat/completions' if api == 'chat' else 'completions'}"
        self.identity = {"backend": "openai", "model": model, "endpoint": self.url}

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.api_key_env:
            key = os.environ.get(self.api_key_env)
            if not key:
                raise JudgeError(
                    f"judge {self.url}: the environment variable {self.api_key_env} (judge.api_key_env) is not set"
                )
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _body(self, prompt: str, max_tokens: int) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "max_tokens": max_tokens, "temperature": 0.0, "seed": 0}
        if self.api == "chat":
            body["messages"] = [{"role": "user", "content": prompt}]
        else:
            body["prompt"] = prompt
        return body

    @staticmethod
    def _text(reply: Mapping[str, Any], api: str) -> str:
        choice = reply["choices"][0]
        text = choice["message"]["content"] if api == "chat" else choice["text"]
        return text if isinstance(text, str) else ""

    def _post(self, prompt: str, max_tokens: int) -> str:
        data = json.dumps(self._body(prompt, max_tokens)).encode()
        headers = self._headers()
        tries = self.retries + 1
        why = ""
        for attempt in range(tries):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    raw = response.read()
            except urllib.error.HTTPError as err:
                why = f"HTTP {err.code} {err.reason}"
                if err.code not in RETRY_STATUS:
                    break
                continue
            except TimeoutError:
                why = f"timed out after {self.timeout:g} s"
                continue
            except urllib.error.URLError as err:
                reason = err.reason
                why = (
                    f"timed out after {self.timeout:g} s"
                    if isinstance(reason, (TimeoutError, socket.timeout))
                    else f"cannot connect ({getattr(reason, 'strerror', None) or reason})"
                )
                continue
            except (ConnectionError, OSError) as err:  # a connection dropped mid-reply
                why = f"connection lost ({type(err).__name__})"
                continue
            try:
                return self._text(json.loads(raw), self.api)
            except (ValueError, KeyError, IndexError, TypeError):
                why = "the reply is not an OpenAI completion"
                break
        raise JudgeError(f"judge {self.url}: {why} ({attempt + 1} of {tries} tries)")

    def complete(self, prompts: Sequence[str], max_tokens: int) -> list[str]:
        if len(prompts) <= 1 or self.concurrency == 1:
            return [self._post(p, max_tokens) for p in prompts]
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(lambda p: self._post(p, max_tokens), prompts))
