"""A queue of decoding requests, served by one worker thread that batches them continuously.

``submit`` (any thread: the HTTP handlers) checks a request first (adapter loaded, prompt in the vocabulary, the
limits) and refuses a bad one at once with one UserError, so a bad request never reaches a batch.

The worker keeps two running batches: greedy rows (`stateft.serve.running.RunningBatch`) and beam searches
(`stateft.serve.running_beams.RunningBeams`, of any beam widths and limits together). Between two decoding steps it
fills their free places (up to ``max_batch`` requests each) with the requests waiting, their prompts prefilled and
their states appended to the running ones; a request leaves at its end (greedy: its EOS or its own token limit; beam
search: when its search is done or reaches its limit), and its place is free for the next one. A greedy request's
tokens go to its ``on_tokens`` listener as they are decoded (streaming); a beam search's answer, known at its end
only, goes in one piece. Each future resolves when its request leaves.

A request is cancelled with ``future.cancel()``, from any thread (the HTTP app does it when a streaming client goes
away): the future stays pending while its request decodes, so the cancel succeeds until the request's end. A queued
request then never starts; a decoding one leaves its running batch before the next step (`RunningBatch.drop`,
`RunningBeams.drop`): it costs no more steps, emits nothing more, and its place is refilled from the queue.

An error while decoding fails the requests it touched only (a prefill: the requests joining; a step: the requests
of that batch); the worker goes on. One worker owns the model: the routing a call sets is never seen by another.

``load`` adds an adapter while the server runs: the worker reads it and rebuilds the banks between two decoding steps
(`AdapterBank.load`, stacked at once), never during one. Loading appends to the banks, so the rows already decoding
keep their adapters (their bank indices, and the zero row of the base model, mean the same after it); requests may
name the new adapter once its future has resolved. A load that fails (one UserError: a bad or taken name, an adapter
of another base model, a method that cannot be served, a damaged file) fails its future only; the worker goes on.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from stateft.errors import UserError
from stateft.foreign import short
from stateft.models.backbone import device_of
from stateft.serve.bank import AdapterBank
from stateft.serve.running import RunningBatch, RunningRows
from stateft.serve.running_beams import RunningBeams


@dataclass(frozen=True)
class Limits:
    """What one request may ask for, and how many requests one batch takes."""

    max_new_tokens: int = 1024
    max_beams: int = 16
    max_prompt_tokens: int = 8192
    max_batch: int = 32  # requests in each running batch (greedy rows; beam searches)


@dataclass
class Request:
    prompt: list[int]
    adapter: str | None
    index: int  # the adapter's bank index, resolved once when the request is checked
    max_new_tokens: int
    num_beams: int
    on_tokens: Callable[[list[int]], None] | None = None
    future: Future = field(default_factory=Future)
    _notified: bool = field(default=False, repr=False)

    def emit(self, tokens: list[int]) -> None:
        """Hand new tokens to the listener (none once cancelled); a listener that fails (its client gone) never stops
        the worker."""
        if self.on_tokens is not None and tokens and not self.future.cancelled():
            try:
                self.on_tokens(list(tokens))
            except Exception:
                self.on_tokens = None

    def settle(self, result: Any = None, error: BaseException | None = None) -> None:
        """Resolve the future with ``result`` or ``error``, unless it was cancelled meanwhile (its caller, from
        another thread, between the worker's check and now): nobody waits for that answer."""
        try:
            if error is None:
                self.future.set_result(result)
            else:
                self.future.set_exception(error)
        except InvalidStateError:
            if not self.future.cancelled():
                raise
            self.left_cancelled()

    def left_cancelled(self) -> None:
        """The worker saw the cancel take effect (the request skipped or gone from its batch): the future's waiters
        in ``concurrent.futures.wait`` / ``as_completed`` are told (they count a cancelled future as done only then)."""
        if self.future.cancelled() and not self._notified:
            self._notified = True
            self.future.set_running_or_notify_cancel()


@dataclass
class Load:
    """An adapter to load on the worker: its future gives the adapter's bank index."""

    name: str
    directory: Path
    future: Future = field(default_factory=Future)


def _cancelled(request: Request) -> bool:
    return request.future.cancelled()


def _int_in(value: object, name: str, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise UserError(f"{name} must be an integer in [{low}, {high}], got {short(value)}")
    return value


class Batcher:
    """Requests in, one worker thread decoding batches of them over ``bank``."""

    def __init__(
        self,
        bank: AdapterBank,
        limits: Limits | None = None,
        eos_id: int | None = 0,
        length_penalty: float = 1.0,
        worker_context: Callable[[], AbstractContextManager] = nullcontext,
    ) -> None:
        """``worker_context``: what the worker thread decodes inside (e.g. ``lambda: torch.autocast("cuda", ...)``:
        autocast is a per-thread setting)."""
        self.bank, self.limits = bank, limits or Limits()
        self.eos_id, self.length_penalty = eos_id, length_penalty
        self.worker_context = worker_context
        # requests prefilled together, in order: a join of the greedy or the beam batch (for logs and tests)
        self.batch_sizes: list[int] = []
        self.running = RunningBatch(bank.model, bank.routing, eos_id)
        self.beams = RunningBeams(bank.model, bank.routing, eos_id, length_penalty)
        self._queue: queue.Queue[Request | Load | None] = queue.Queue()
        self._thread: threading.Thread | None = None

    def submit(
        self,
        prompt: list[int],
        adapter: str | None,
        max_new_tokens: int,
        num_beams: int = 1,
        on_tokens: Callable[[list[int]], None] | None = None,
    ) -> Future:
        """Check a request and queue it; its future gives the new tokens (without EOS), ``on_tokens`` (called from the
        worker thread) each new piece of them as it is decoded; ``future.cancel()`` stops it (module docstring).
        UserError if the request is bad."""
        limits = self.limits
        index = self.bank.index(adapter)
        self.bank.check_prompt(prompt)
        if len(prompt) > limits.max_prompt_tokens:
            raise UserError(
                f"the prompt has {len(prompt)} tokens; this server takes at most {limits.max_prompt_tokens}"
            )
        _int_in(max_new_tokens, "max_new_tokens", 0, limits.max_new_tokens)
        _int_in(num_beams, "num_beams", 1, limits.max_beams)
        request = Request(list(prompt), adapter, index, max_new_tokens, num_beams, on_tokens)
        self._queue.put(request)
        return request.future

    def load(self, name: str, directory: str | Path) -> Future:
        """Queue the adapter in the local folder ``directory`` to be loaded under ``name`` by the worker, between two
        decoding steps (module docstring); the future gives its bank index, or the bank's UserError. A load queued
        before ``start`` runs when the worker starts; ``future.cancel()`` stops it until the worker takes it."""
        job = Load(name, Path(directory))
        self._queue.put(job)
        return job.future

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
        with self.worker_context():
            self._serve()

    def _serve(self) -> None:
        greedy: deque[Request] = deque()
        beams: deque[Request] = deque()
        stopping = False
        while True:
            idle = not self.running and not self.beams and not greedy and not beams
            if idle and stopping:
                return
            if not stopping:
                stopping = self._collect(greedy, beams, wait=idle)
            # cancelled requests leave before the joins, so that their places are refilled at once
            self._drop_cancelled(self.running, [row.key for row in self.running.rows])
            self._drop_cancelled(self.beams, [example.key for example in self.beams.examples])
            self._join(self.running, greedy)
            self._join(self.beams, beams)
            self._step_greedy()
            self._step_beams()

    def _collect(self, greedy: deque[Request], beams: deque[Request], wait: bool) -> bool:
        """Move the queued requests to ``greedy`` / ``beams`` (waiting for the first if ``wait``) and run the queued
        loads, in their order; True once the queue says stop (``close``)."""
        while True:
            try:
                request = self._queue.get(block=wait)
            except queue.Empty:
                return False
            wait = False
            if request is None:
                return True
            if isinstance(request, Load):
                self._load(request)
            else:
                (greedy if request.num_beams == 1 else beams).append(request)

    def _load(self, job: Load) -> None:
        """Load ``job``'s adapter and build the banks now (no step runs meanwhile: this is the worker), outside any
        autocast of ``worker_context``: its tensors computed as at start-up (`AdapterBank.load` on the main thread)."""
        if not job.future.set_running_or_notify_cancel():
            return
        try:
            with torch.autocast(device_of(self.bank.model).type, enabled=False):
                index = self.bank.load(job.name, job.directory, stack=True)
        except Exception as err:  # this load fails, the running requests go on
            job.future.set_exception(err)
        else:
            job.future.set_result(index)

    def _join(self, batch: RunningRows, waiting: deque[Request]) -> None:
        """Fill ``batch``'s free places with waiting requests (cancelled ones skipped, no-token ones answered)."""
        joining: list[Request] = []
        while waiting and len(batch) + len(joining) < self.limits.max_batch:
            request = waiting.popleft()
            if request.future.cancelled():
                request.left_cancelled()
                continue
            if request.max_new_tokens == 0:
                request.settle([])
            else:
                joining.append(request)
        if not joining:
            return
        self.batch_sizes.append(len(joining))
        try:
            prompts, limits = [r.prompt for r in joining], [r.max_new_tokens for r in joining]
            adapters = [r.index for r in joining]
            if batch is self.beams:
                self.beams.join(joining, prompts, adapters, [r.num_beams for r in joining], limits)
            else:
                self.running.join(joining, prompts, adapters, limits)
        except Exception as err:  # these requests fail, the running ones go on
            for request in joining:
                request.settle(error=err)

    def _step_greedy(self) -> None:
        """One step of the greedy batch: new tokens to their listeners, finished requests resolved."""
        requests = [row.key for row in self.running.rows]
        try:
            emitted, finished = self.running.pick()
        except Exception as err:
            self._fail(self.running, requests, err)
            return
        for row, token in emitted:
            row.key.emit([token])
        for row in finished:
            row.key.settle(list(row.tokens))
        self._advance(self.running, [row.key for row in self.running.rows])

    def _step_beams(self) -> None:
        """One step of the beam searches: the answers of the searches done to their listeners and futures."""
        requests = [example.key for example in self.beams.examples]
        try:
            finished = self.beams.pick()
        except Exception as err:
            self._fail(self.beams, requests, err)
            return
        for example in finished:
            tokens = example.search.best()
            example.key.emit(tokens)
            example.key.settle(tokens)
        self._advance(self.beams, [example.key for example in self.beams.examples])

    def _drop_cancelled(self, batch: RunningRows, requests: list[Request]) -> None:
        """Let the cancelled requests of ``batch`` leave it before its next step."""
        try:
            for gone in batch.drop(_cancelled):
                gone.key.left_cancelled()
        except Exception as err:  # the requests of this batch fail, the server goes on
            self._fail(batch, requests, err)

    def _advance(self, batch: RunningRows, requests: list[Request]) -> None:
        try:
            batch.advance()
        except Exception as err:  # the requests of this batch fail, the server goes on
            self._fail(batch, requests, err)

    @staticmethod
    def _fail(batch: RunningRows, requests: list[Request], err: Exception) -> None:
        batch.clear()
        for request in requests:
            request.settle(error=err)
