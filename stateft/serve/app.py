"""The HTTP app (FastAPI, the ``serve`` extra): ``POST /generate`` over a `Batcher`, ``GET /adapters``, and
``POST /adapters`` when the server allows loading.

``POST /generate`` takes JSON ``{"prompt": text | "input_ids": [ids], "adapter": name | null, "max_new_tokens": n,
"num_beams": k, "stream": false}`` (exactly one of prompt / input_ids; ``adapter`` null or left out: the base model;
by default 64 new tokens, or the server's limit if lower, and greedy) and answers ``{"adapter", "output_ids",
"text"}`` (the new tokens without EOS; ``text`` when the server has a tokenizer). Requests are decoded together, each
row with its own adapter (`stateft.serve.batcher`: a request joins the running batch as soon as one leaves it).

With ``"stream": true`` the answer is Server-Sent Events (``text/event-stream``), each ``data: <JSON>`` line one
event: ``{"token_ids": [...], "text": "..."}`` for every new piece as it is decoded (greedy: one token each; beam
search: all at the end, when the best hypothesis is known; ``text`` the new text, when the server has a tokenizer and
the piece ends on a whole character), then the full answer with ``"done": true``, or ``{"error": ...}`` if decoding
failed. A stream whose client goes away cancels its request (`stateft.serve.batcher`: it leaves the running batch
before the next step, its place refilled from the queue): the server sees it when it cancels or closes the stream,
or, for a server that does neither, when the client's disconnect is polled (every ``WATCH_S`` seconds).

A bad request gets one JSON ``{"error": "<one line>"}``: 422 for a malformed body (a missing or mistyped field, an
unknown key), 400 for a request this server cannot serve (an adapter it has not loaded, a token outside the
vocabulary, a limit), 500 if decoding itself failed; the server keeps serving the others.

``POST /adapters`` with JSON ``{"name": name, "adapter": folder or hub id}`` (the ``adapter`` as the command line's
``--adapter NAME=PATH`` takes its PATH: a local folder or ``hf://owner/name[@revision]``, `stateft.hub.resolve_adapter`)
loads an adapter while the server runs (`Batcher.load`: between two decoding steps; the requests decoding go on with
their own adapters) and answers ``{"name", "method"}`` once requests may name it. Only a server created with
``allow_loading`` (``--allow-loading``) takes it, as it reads folders the client names; otherwise 403. A load that
fails (a bad or taken name, an adapter of another base model or an unserved method, a missing or damaged folder) is
one error JSON (400), and the server goes on.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from concurrent.futures import Future
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, StrictBool, StrictInt, StrictStr

from stateft.errors import UserError
from stateft.hub import resolve_adapter
from stateft.serve.batcher import Batcher

DEFAULT_NEW_TOKENS = 64
WATCH_S = 0.25  # how often a stream asks whether its client is still there


class GenerateRequest(BaseModel):
    """The body of ``POST /generate``."""

    model_config = ConfigDict(extra="forbid")

    prompt: StrictStr | None = None
    input_ids: list[StrictInt] | None = None
    adapter: StrictStr | None = None
    max_new_tokens: StrictInt | None = None  # None: DEFAULT_NEW_TOKENS or the server's limit if lower
    num_beams: StrictInt = 1
    stream: StrictBool = False


class LoadRequest(BaseModel):
    """The body of ``POST /adapters``."""

    model_config = ConfigDict(extra="forbid")

    name: StrictStr
    adapter: StrictStr  # a local folder or a hub id, as --adapter NAME=PATH takes PATH


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": message})


def _failure(err: BaseException) -> str:
    return f"decoding failed: {type(err).__name__}: {err}".splitlines()[0]


def _event(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload)}\n\n"


class _TextPieces:
    """The text of a growing answer, piece by piece: each call returns the text the new tokens add, empty while the
    answer ends inside a character (the tokenizer's U+FFFD) or its text so far is not a prefix of the new text."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer, self.tokens, self.sent = tokenizer, [], ""

    def add(self, tokens: list[int]) -> str:
        self.tokens += tokens
        text = self.tokenizer.decode(self.tokens)
        if text.endswith("\ufffd") or not text.startswith(self.sent):
            return ""
        piece, self.sent = text[len(self.sent) :], text
        return piece


async def _cancel_when_gone(client: Request, future: Future) -> None:
    """Cancel ``future`` once ``client`` has disconnected, asking every ``WATCH_S`` seconds until it ends: a server
    that neither cancels nor closes a stream (Starlette streams without watching under ASGI spec 2.4) tells only
    through ``receive``."""
    while not future.done():
        if await client.is_disconnected():
            future.cancel()
            return
        await asyncio.sleep(WATCH_S)


async def _events(
    pieces: asyncio.Queue, future: Future, answer: dict[str, Any], tokenizer: Any, client: Request
) -> AsyncIterator[str]:
    """The events of a streamed request: its pieces as they come, then the answer (or the error). The request is
    cancelled once the client is seen gone, and by its response (`_RequestStream`) when the stream stops before its
    end; a cancelled request's stream ends without an answer."""
    watch = asyncio.create_task(_cancel_when_gone(client, future))
    try:
        text = None if tokenizer is None else _TextPieces(tokenizer)
        while (tokens := await pieces.get()) is not None:
            event: dict[str, Any] = {"token_ids": tokens}
            if text is not None:
                event["text"] = text.add(tokens)
            yield _event(event)
        if future.cancelled():
            return
        try:
            tokens = future.result()
        except Exception as err:
            yield _event({"error": _failure(err)})
            return
        answer["output_ids"] = tokens
        if tokenizer is not None:
            answer["text"] = tokenizer.decode(tokens)
        yield _event({**answer, "done": True})
    finally:
        watch.cancel()


class _RequestStream(StreamingResponse):
    """A streamed answer that cancels its request when the response ends, however it ends: also when sending fails
    before the first piece (the client already gone), where the events generator never starts."""

    def __init__(self, events: AsyncIterator[str], future: Future) -> None:
        super().__init__(events, media_type="text/event-stream")
        self.future = future

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:  # the server cancelled or closed the stream, a send failed, or it ended (then this does nothing)
            self.future.cancel()


def _validation_message(err: RequestValidationError) -> str:
    """The first problem of a malformed body, in one line: where (the field) and what."""
    problems = err.errors()
    if not problems:
        return "malformed request body"
    first = problems[0]
    where = ".".join(str(part) for part in first.get("loc", ()) if part != "body") or "body"
    return f"{where}: {first.get('msg', 'invalid')}"


def create_app(
    batcher: Batcher, tokenizer: Any = None, base_name: str | None = None, allow_loading: bool = False
) -> FastAPI:
    """The app serving ``batcher`` (started and stopped with the app). ``tokenizer`` (`stateft.tokenizer.Tokenizer`)
    turns text prompts into ids and answers into text; without it only ``input_ids`` are taken. ``allow_loading``:
    ``POST /adapters`` loads the adapter a client names (off: 403)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        try:
            yield
        finally:
            batcher.close()

    app = FastAPI(title="stateft", lifespan=lifespan)

    @app.exception_handler(RequestValidationError)
    async def malformed(request: Request, err: RequestValidationError) -> JSONResponse:
        return _error(422, _validation_message(err))

    @app.get("/adapters")
    async def adapters() -> dict[str, Any]:
        bank = batcher.bank
        listed = [{"name": n, "method": m} for n, m in zip(bank.names, bank.methods)]
        return {"base": base_name, "adapters": listed}

    if allow_loading:

        @app.post("/adapters")
        async def load(body: LoadRequest) -> Any:
            try:  # a hub adapter is downloaded here, off the event loop and off the decoding worker
                directory, _ = await asyncio.to_thread(resolve_adapter, body.adapter)
                index = await asyncio.wrap_future(batcher.load(body.name, directory))
            except UserError as err:
                return _error(400, str(err).splitlines()[0])
            except Exception as err:
                return _error(500, f"loading failed: {type(err).__name__}: {err}".splitlines()[0])
            return {"name": body.name, "method": batcher.bank.methods[index]}

    else:

        @app.post("/adapters")
        async def load_refused() -> JSONResponse:  # whatever the body holds
            return _error(403, "this server loads no adapters while it runs: start it with --allow-loading")

    @app.post("/generate")
    async def generate(body: GenerateRequest, client: Request) -> Any:
        if (body.prompt is None) == (body.input_ids is None):
            return _error(400, "give exactly one of prompt (text) and input_ids (token ids)")
        if body.prompt is not None:
            if tokenizer is None:
                return _error(400, "this server has no tokenizer: send input_ids")
            ids = tokenizer.encode(body.prompt)
        else:
            ids = body.input_ids
        on_tokens = None
        if body.stream:  # the worker thread hands the pieces to this request's event loop
            loop, pieces = asyncio.get_running_loop(), asyncio.Queue()

            def on_tokens(tokens: list[int] | None) -> None:  # None: the end
                try:
                    loop.call_soon_threadsafe(pieces.put_nowait, tokens)
                except RuntimeError:  # the loop is closed: nobody reads this stream any more
                    pass

        try:
            limit = min(DEFAULT_NEW_TOKENS, batcher.limits.max_new_tokens)
            max_new = limit if body.max_new_tokens is None else body.max_new_tokens
            future = batcher.submit(ids, body.adapter, max_new, body.num_beams, on_tokens=on_tokens)
        except UserError as err:
            return _error(400, str(err))
        if body.stream:  # after the last piece: the end (pieces and the end keep their order on the loop)
            future.add_done_callback(lambda _: on_tokens(None))
            events = _events(pieces, future, {"adapter": body.adapter}, tokenizer, client)
            return _RequestStream(events, future)
        try:
            tokens = await asyncio.wrap_future(future)
        except Exception as err:
            return _error(500, _failure(err))
        answer: dict[str, Any] = {"adapter": body.adapter, "output_ids": tokens}
        if tokenizer is not None:
            answer["text"] = tokenizer.decode(tokens)
        return answer

    return app
