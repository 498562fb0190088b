"""Serving many adapters over one base model: rows of one batch decoded with different adapters.

- `stateft.serve.routing`: modules in the model's adapter slots that answer each row with its adapter's tensors.
- `stateft.serve.bank`: ``AdapterBank``, loading adapters of the state methods (checked as data) and decoding.
- `stateft.serve.decode`: batched greedy and beam search with a row -> adapter index (`stateft.generation` reused).
- `stateft.serve.batcher`, `stateft.serve.app`: a request queue that batches waiting requests, and the HTTP app
  (FastAPI, the ``serve`` extra); ``python -m stateft.serve --base ... --adapter name=path`` runs it.
"""

from __future__ import annotations

from stateft.serve.bank import SERVED_METHODS, AdapterBank

__all__ = ["SERVED_METHODS", "AdapterBank"]
