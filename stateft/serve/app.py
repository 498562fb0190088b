"""The HTTP app (FastAPI, the ``serve`` extra): ``POST /generate`` over a `Batcher`, ``GET /adapters``.

``POST /generate`` takes JSON ``{"prompt": text | "input_ids": [ids], "adapter": name | null, "max_new_tokens": n,
"num_beams": k}`` (exactly one of prompt / input_ids; ``adapter`` null or left out: the base model; by default 64 new
tokens, or the server's limit if lower, and greedy) and answers ``{"adapter", "output_ids", "text"}`` (the new tokens
without EOS; ``text`` when the server has a tokenizer). Requests that arrive together are
decoded as one batch, each row with its own adapter. A bad request gets one JSON ``{"error": "<one line>"}``: 422 for
a malformed body (a missing or mistyped field, an unknown key), 400 for a request this server cannot serve (an
adapter it has not loaded, a token outside the vocabulary, a limit), 500 if decoding itself failed; the server keeps
serving the others.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, StrictInt, StrictStr

from stateft.errors import UserError
from stateft.serve.batcher import Batcher

DEFAULT_NEW_TOKENS = 64


class GenerateRequest(BaseModel):
    """The body of ``POST /generate``."""

    model_config = ConfigDict(extra="forbid")

    prompt: StrictStr | None = None
    input_ids: list[StrictInt] | None = None
    adapter: StrictStr | None = None
    max_new_tokens: StrictInt | None = None  # None: DEFAULT_NEW_TOKENS or the server's limit if lower
    num_beams: StrictInt = 1


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": message})


def _validation_message(err: RequestValidationError) -> str:
    """The first problem of a malformed body, in one line: where (the field) and what."""
    problems = err.errors()
    if not problems:
        return "malformed request body"
    first = problems[0]
    where = ".".join(str(part) for part in first.get("loc", ()) if part != "body") or "body"
    return f"{where}: {first.get('msg', 'invalid')}"


def create_app(batcher: Batcher, tokenizer: Any = None, base_name: str | None = None) -> FastAPI:
    """The app serving ``batcher`` (started and stopped with the app). ``tokenizer`` (`stateft.tokenizer.Tokenizer`)
    turns text prompts into ids and answers into text; without it only ``input_ids`` are taken."""

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

    @app.post("/generate")
    async def generate(body: GenerateRequest) -> Any:
        if (body.prompt is None) == (body.input_ids is None):
            return _error(400, "give exactly one of prompt (text) and input_ids (token ids)")
        if body.prompt is not None:
            if tokenizer is None:
                return _error(400, "this server has no tokenizer: send input_ids")
            ids = tokenizer.encode(body.prompt)
        else:
            ids = body.input_ids
        try:
            limit = min(DEFAULT_NEW_TOKENS, batcher.limits.max_new_tokens)
            max_new = limit if body.max_new_tokens is None else body.max_new_tokens
            future = batcher.submit(ids, body.adapter, max_new, body.num_beams)
        except UserError as err:
            return _error(400, str(err))
        try:
            tokens = await asyncio.wrap_future(future)
        except Exception as err:
            return _error(500, f"decoding failed: {type(err).__name__}: {err}".splitlines()[0])
        answer: dict[str, Any] = {"adapter": body.adapter, "output_ids": tokens}
        if tokenizer is not None:
            answer["text"] = tokenizer.decode(tokens)
        return answer

    return app
