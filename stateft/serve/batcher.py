"""A queue of decoding requests, served by one worker thread that batches whatever is waiting.

``submit`` (any thread: the HTTP handlers) checks a request first (adapter loaded, prompt in the vocabulary, the
limits) and refuses a bad one at once with one UserError, so a bad request never reaches a batch. The worker takes
every request waiting (at most ``max_batch``), decodes those with the same decoding settings as one batch whose rows
use their own adapters (`AdapterBank.generate`), and resolves each request's future. An error inside a batch fails
that batch's requests only; the worker goes on with the next.

Greedy requests share a batch whatever their ``max_new_tokens``: the batch decodes to the largest and each answer is
cut to its own limit (greedy's first n tokens do not depend on the limit). Beam requests share a batch only with the
same beam width and limit (the limit decides which hypotheses finish).

One worker owns the model: decoding runs one batch at a time, and the routing a batch sets is never seen by another.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field

from stateft.errors import UserError
from stateft.foreign import short
from stateft.serve.bank import AdapterBank


@dataclass(frozen=True)
class Limits:
    """What one request may ask for, and how many requests one batch takes."""

    max_new_tokens: int = 1024
    max_beams: int = 16
    max_prompt_tokens: int = 8192
    max_batch: int = 32


@dataclass
class Request:
    prompt: list[int]
    adapter: str | None
    max_new_tokens: int
    num_beams: int
    future: Future = field(default_factory=Future)

    def key(self) -> tuple[int, ...]:
        """Requests with equal keys decode in one batch."""
        return (1,) if self.num_beams == 1 else (self.num_beams, self.max_new_tokens)


def _int_in(value: object, name: str, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise UserError(f"{name} must be an integer in [{low}, {high}], got {short(value)}")
    return value


class Batcher:
    """Requests in, one worker thread decoding batches of them over ``bank``."""

    def __init__(
        self, bank: AdapterBank, limits: Limits | None = None, eos_id: int | None = 0, length_penalty: float = 1.0
    ) -> None:
        self.bank, self.limits = bank, limits or Limits()
        self.eos_id, self.length_penalty = eos_id, length_penalty
        self.batch_sizes: list[int] = []  # rows of every batch decoded, in order (for logs and tests)
        self._queue: queue.Queue[Request | None] = queue.Queue()
        self._thread: threading.Thread | None = None

    def submit(self, prompt: list[int], adapter: str | None, max_new_tokens: int, num_beams: int = 1) -> Future:
        """Check a request and queue it; its future gives the new tokens (without EOS). UserError if it is bad."""
        limits = self.limits
        self.bank.index(adapter)
        self.bank.check_prompt(prompt)
        if len(prompt) > limits.max_prompt_tokens:
            raise UserError(
                f"the prompt has {len(prompt)} tokens; this server takes at most {limits.max_prompt_tokens}"
            )
        _int_in(max_new_tokens, "max_new_tokens", 0, limits.max_new_tokens)
        _int_in(num_beams, "num_beams", 1, limits.max_beams)
        request = Request(list(prompt), adapter, max_new_tokens, num_beams)
        self._queue.put(request)
        return request.future

    # -- the worker ---------------------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="stateft-serve", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Stop the worker after the requests queued so far."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch, stop = [first], False
            while len(batch) < self.limits.max_batch:
                try:
                    request = self._queue.get_nowait()
                except queue.Empty:
                    break
                if request is None:
                    stop = True
                    break
                batch.append(request)
            groups: dict[tuple[int, ...], list[Request]] = {}
            for request in batch:
                groups.setdefault(request.key(), []).append(request)
            for group in groups.values():
                self._decode(group)
            if stop:
                return

    def _decode(self, group: list[Request]) -> None:
        live = [r for r in group if r.future.set_running_or_notify_cancel()]
        if not live:
            return
        self.batch_sizes.append(len(live))
        try:
            outputs = self.bank.generate(
                [r.prompt for r in live],
                [r.adapter for r in live],
                max_new_tokens=max(r.max_new_tokens for r in live),
                num_beams=live[0].num_beams,
                eos_id=self.eos_id,
                length_penalty=self.length_penalty,
            )
        except Exception as err:  # this batch fails, the server goes on
            for request in live:
                request.future.set_exception(err)
            return
        for request, tokens in zip(live, outputs):
            request.future.set_result(tokens[: request.max_new_tokens])
