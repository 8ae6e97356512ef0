"""A stub LLM that speaks the Ollama HTTP API on 127.0.0.1, for tests only: the native API
(``/api/chat``, ``/api/generate``) and, as Ollama does under ``/v1``, the OpenAI-compatible
chat completions, which return the answer's log-probabilities when asked (``logprobs``,
``top_logprobs``).

What it answers is decided by the text of the prompt (tests/stub_answers.py: pairwise
judgments, extractive answers, RAGAS's structured outputs). Its failure modes are switched
on per test: a delay, HTTP errors, garbage answers, or malformed output for the prompts
that contain a given text.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .stub_answers import is_judgment, judge_logprobs, overlap, respond

__all__ = ["StubOllama", "overlap"]


def tokens(text: str) -> int:
    """What the stub reports as a token count: words and punctuation runs of the text."""
    import re

    return len(re.findall(r"\w+|[^\w\s]", text))


CHAT_COMPLETIONS = "/v1/chat/completions"


class _Server(ThreadingHTTPServer):
    # socketserver listens with a backlog of 5: a 6th simultaneous connection waits for a TCP
    # SYN retry (1 s), which a real Ollama server (Go's backlog is the system maximum) never costs.
    request_queue_size = 128


class StubOllama:
    def __init__(self, delay: float = 0.0, slots: int | None = None) -> None:
        self.delay = delay
        # Requests served at once, as Ollama's OLLAMA_NUM_PARALLEL: the others queue (None: all).
        self._slots = threading.BoundedSemaphore(slots) if slots else None
        self.status = 200  # set to 500 to fail every call
        self.refuse_logprobs = False  # answer a /v1 request asking for logprobs with a 400, as some servers do
        self.refused = 0
        self.answer: str | None = None  # set to force an answer (e.g. garbage)
        self.garble: str | None = None  # prompts containing this text get malformed JSON back
        # A misbehaving server, for the fault-injection tests: "hang", "dribble", "reset",
        # "429", "invalid_json" or "huge" (a 20 MB answer).
        self.fault: str | None = None
        self.fault_after = 0  # judge requests answered well before the fault starts
        self.requests = 0  # judge requests (/api/chat, /api/generate, /v1/chat/completions); /api/show not counted
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                self._send(200, {"models": [], "version": "0.0-stub"})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                with stub._lock:
                    stub.requests += self.path in ("/api/chat", "/api/generate", CHAT_COMPLETIONS)
                    stub.in_flight += 1
                    stub.max_in_flight = max(stub.max_in_flight, stub.in_flight)
                try:
                    if stub._slots is not None and self.path != "/api/show":
                        with stub._slots:
                            time.sleep(stub.delay)
                    else:
                        time.sleep(stub.delay)
                    if self.path == "/api/show":
                        self._send(200, {"modelfile": "", "parameters": "", "template": "", "details": {}, "model_info": {}})
                    elif stub.fault is not None and stub.requests > stub.fault_after:
                        self._misbehave(stub.fault)
                    elif stub.status != 200:
                        self._send(stub.status, {"error": "stub failure"})
                    elif self.path == "/api/chat":
                        prompt = "\n".join(m.get("content", "") for m in body.get("messages", []))
                        answer = stub.reply(prompt)
                        self._send(
                            200,
                            {
                                "model": body.get("model"),
                                "message": {"role": "assistant", "content": answer},
                                "done": True,
                                "done_reason": "stop",
                                "prompt_eval_count": tokens(prompt),
                                "eval_count": tokens(answer),
                            },
                        )
                    elif self.path == CHAT_COMPLETIONS and stub.refuse_logprobs and body.get("logprobs"):
                        with stub._lock:
                            stub.refused += 1
                        message = "logprobs is not supported by this server"
                        self._send(400, {"error": {"message": message, "type": "invalid_request_error", "code": 400}})
                    elif self.path == CHAT_COMPLETIONS:
                        prompt = "\n".join(m.get("content", "") for m in body.get("messages", []))
                        self._send(200, stub.chat_completion(body, prompt))
                    elif self.path == "/api/generate":
                        answer = stub.reply(body.get("prompt", ""))
                        self._send(
                            200,
                            {
                                "model": body.get("model"),
                                "response": answer,
                                "done": True,
                                "prompt_eval_count": tokens(body.get("prompt", "")),
                                "eval_count": tokens(answer),
                            },
                        )
                    else:
                        self._send(404, {"error": "not found"})
                finally:
                    with stub._lock:
                        stub.in_flight -= 1

            def _misbehave(self, fault):
                if fault == "hang":
                    time.sleep(60)
                elif fault == "dribble":  # a valid answer, one byte every half second
                    data = json.dumps({"message": {"role": "assistant", "content": "A"}, "done": True}).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    for byte in data:
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                        time.sleep(0.5)
                elif fault == "reset":  # RST instead of an answer
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.connection.close()
                elif fault == "429":
                    self.send_response(429)
                    self.send_header("Retry-After", "30")
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"{}")
                elif fault == "invalid_json":
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", "9")
                    self.end_headers()
                    self.wfile.write(b"{not json")
                elif fault == "huge":
                    self._send(200, {"message": {"role": "assistant", "content": "A" * 20_000_000}, "done": True})

            def _send(self, status, payload):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                    pass

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def chat_completion(self, body: dict, prompt: str) -> dict:
        """An OpenAI chat completion, with the first token's log-probabilities when asked: for
        a judgment, every letter shown and one token that is no letter ("Passage")."""
        answer = self.reply(prompt)
        choice: dict = {"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}
        if body.get("logprobs") and self.answer is None and is_judgment(prompt):
            letters = judge_logprobs(prompt)
            listed = sorted([*letters, ("Passage", min(lp for _, lp in letters) - 2.0)], key=lambda pair: -pair[1])
            top = [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in listed[: body.get("top_logprobs") or 1]]
            choice["logprobs"] = {"content": [{**top[0], "top_logprobs": top}]}
        return {
            "id": f"stub-{self.requests}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model"),
            "choices": [choice],
            "usage": {
                "prompt_tokens": tokens(prompt),
                "completion_tokens": tokens(answer),
                "total_tokens": tokens(prompt + " " + answer),
            },
        }

    def reply(self, prompt: str) -> str:
        if self.answer is not None:
            return self.answer
        if self.garble is not None and self.garble in prompt:
            return '{"statements": [unfinished'
        return respond(prompt)

    def __enter__(self) -> StubOllama:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def main() -> None:
    """``python -m tests.stub_ollama --delay 0.25 --slots 2``: serve in a process of its own
    (as a real Ollama server runs), print the URL, serve until killed."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds each answer takes")
    parser.add_argument("--slots", type=int, default=None, help="answers computed at once (default: all)")
    args = parser.parse_args()
    with StubOllama(delay=args.delay, slots=args.slots) as stub:
        print(stub.url, flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main()
