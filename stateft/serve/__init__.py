"""Serving many adapters over one base model: rows of one batch decoded with different adapters.

- `stateft.serve.routing`: modules in the model's adapter slots that answer each row with its adapter's tensors.
- `stateft.serve.routed_lora`: modules in place of the linears LoRA adapters update, adding each row's own update.
- `stateft.serve.bank`: ``AdapterBank``, loading state and LoRA adapters (checked as data) and decoding.
- `stateft.serve.decode`: batched greedy and beam search with a row -> adapter index (`stateft.generation` reused).
- `stateft.serve.running`, `stateft.serve.running_beams`: continuous batching, greedy rows and beam searches joining
  and leaving a running batch between steps.
- `stateft.serve.batcher`, `stateft.serve.app`: a request queue served by one worker that batches continuously, and
  the HTTP app (FastAPI, the ``serve`` extra; tokens streamed as Server-Sent Events on request, a request cancelled
  when its stream's client leaves; adapters loaded while serving, between two decoding steps, with
  ``--allow-loading``); ``python -m stateft.serve --base ... --adapter name=path`` runs it.
"""

from __future__ import annotations

from stateft.serve.bank import SERVED_METHODS, AdapterBank

__all__ = ["SERVED_METHODS", "AdapterBank"]
