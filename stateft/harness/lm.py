"""``StateftLM``: lm-evaluation-harness's model interface over a stateft model, registered as ``stateft``.

Tokenisation is lm-eval's ``TemplateLM`` (context and continuation encoded together and split, as its ``hf`` model
does); an empty context is conditioned on EOS. Scoring runs batches of requests, longest first, right-padded: a causal
model's outputs at a row's real positions do not depend on the padding after them. Only the positions that predict a
continuation token go through the LM head; their log-softmax is over the model's whole (padded) output row, as ``hf``
computes it. Sequences longer than ``max_length + 1`` lose tokens on the left, as in ``hf``. Generation is greedy
(``stateft.generation.generate_batch``), cut at the first stop sequence.
"""

from __future__ import annotations

import logging
from typing import Any

import lm_eval.models  # noqa: F401  (lm-eval fills its registry with its own model types only while it is empty)
import torch
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import handle_stop_sequences
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

from stateft.errors import UserError

log = logging.getLogger(__name__)


def _positive_int(value: Any, name: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if number < 1 or (isinstance(value, float) and value != number):
        raise UserError(f"model_args {name}={value!r} must be a whole number >= 1")
    return number


def _device(requested: str | None) -> torch.device:
    """The device asked for; lm-eval's command line asks for cuda:0 unless told otherwise, so on a machine without
    CUDA a cuda request falls back to the CPU (as lm-eval's hf model does), with a warning."""
    if requested is None or (str(requested).startswith("cuda") and not torch.cuda.is_available()):
        if requested is not None:
            log.warning("device %s is not available: running on the CPU", requested)
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


@register_model("stateft")
class StateftLM(TemplateLM):
    """A stateft base model (``pretrained``: one of our model configs, a checkpoint folder or a hub id; left out: the
    adapter's recorded base) with an optional ``adapter`` (a directory written by ``train.py``, or hf://owner/name).

    ``batch_size``: requests scored together (lm-eval's ``auto`` is taken as 64); ``max_length``: tokens a request
    may span; ``max_gen_toks``: the generation limit when a task names none; ``dtype``: the base's storage (fp32, as
    MambaPEFT evaluated). ``model`` and ``tokenizer`` (objects) wrap a model already built instead (``eval.py``,
    tests).
    """

    def __init__(
        self,
        pretrained: str | None = None,
        adapter: str | None = None,
        batch_size: int | str | None = 64,
        max_length: int | str = 2048,
        max_gen_toks: int | str = 256,
        dtype: str = "float32",
        device: str | None = None,
        max_batch_size: Any = None,
        model: Any = None,
        tokenizer: Any = None,
        **unknown: Any,
    ) -> None:
        super().__init__()
        if unknown:
            raise UserError(
                f"model_args {', '.join(sorted(unknown))}: not an option of --model stateft (its options: pretrained, "
                "adapter, batch_size, max_length, max_gen_toks, dtype, device)"
            )
        self._batch_size = 64 if batch_size in (None, "auto") else _positive_int(batch_size, "batch_size")
        self._max_length = _positive_int(max_length, "max_length")
        self.max_gen_toks = _positive_int(max_gen_toks, "max_gen_toks")
        self._device = _device(device)
        self.adapter = None
        if model is None:
            from stateft.harness.backbone import load_model

            model, tokenizer, self.adapter = load_model(pretrained, adapter, dtype=str(dtype), device=str(self._device))
        if tokenizer is None or isinstance(tokenizer, str):
            from stateft.tokenizer import DEFAULT_NAME, load_tokenizer

            tokenizer = load_tokenizer(tokenizer or DEFAULT_NAME)
        self.model, self.tok = model.to(self._device).eval(), tokenizer

    # ---- what lm-eval asks of a model -------------------------------------------------------------------------------
    @property
    def eot_token_id(self) -> int:
        return self.tok.eos_id

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def batch_size(self) -> int:
        return self._batch_size

    @property
    def tokenizer_name(self) -> str:
        """Part of lm-eval's request-cache key (``--use_cache``)."""
        return f"stateft-tokenizer-{self.tok.vocab_size}"

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
        return self.tok.encode(string)

    def tok_decode(self, tokens: list[int]) -> str:
        return self.tok.decode(tokens)

    # ---- scoring ----------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def _score_batch(self, rows: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        """``(input ids, continuation ids)`` per row, the continuation being the last tokens the inputs predict:
        (sum of the continuation's log-probabilities, whether greedy decoding gives it)."""
        width = max(len(ids) for ids, _ in rows)
        batch = torch.full((len(rows), width), self.tok.pad_id, dtype=torch.long)
        for row, (ids, _) in enumerate(rows):
            batch[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        hidden = self.model.hidden_states(batch.to(self.device))  # (b l d)
        row_index = [row for row, (_, cont) in enumerate(rows) for _ in cont]
        position = [p for ids, cont in rows for p in range(len(ids) - len(cont), len(ids))]
        logits = self.model.lm_head(hidden[row_index, position]).float()  # (n V): the continuation positions only
        log_probs = torch.log_softmax(logits, dim=-1)
        targets = torch.tensor([t for _, cont in rows for t in cont], device=logits.device)
        picked = log_probs.gather(-1, targets[:, None])[:, 0]
        hits = logits.argmax(-1) == targets
        out, start = [], 0
        for _, cont in rows:
            end = start + len(cont)
            out.append((float(picked[start:end].double().sum()), bool(hits[start:end].all())))
            start = end
        return out

    def _loglikelihood_tokens(
        self, requests: list[tuple[Any, list[int], list[int]]], disable_tqdm: bool = False, **kwargs: Any
    ) -> list[tuple[float, bool]]:
        rows = []
        for _, context, continuation in requests:
            if not continuation or len(continuation) > self.max_length:
                raise UserError(
                    f"a continuation of {len(continuation)} tokens cannot be scored within max_length="
                    f"{self.max_length}; raise max_length"
                )
            whole = (context + continuation)[-(self.max_length + 1) :]
            rows.append((whole[:-1], continuation))
        order = sorted(range(len(rows)), key=lambda i: -len(rows[i][0]))
        results: list[tuple[float, bool]] = [(0.0, False)] * len(rows)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            for i, score in zip(chunk, self._score_batch([rows[i] for i in chunk])):
                results[i] = score
                if requests[i][0] is not None:
                    self.cache_hook.add_partial("loglikelihood", requests[i][0], score)
        return results

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        """Each string's log-likelihood over disjoint windows of ``max_length`` tokens, the first conditioned on
        EOS (lm-eval's rolling windows)."""
        windows, owner = [], []
        for index, (string,) in enumerate(req.args for req in requests):
            rolling = get_rolling_token_windows(
                token_list=self.tok_encode(string),
                prefix_token=self.prefix_token_id,
                max_seq_len=self.max_length,
                context_len=1,
            )
            for context, continuation in map(make_disjoint_window, rolling):
                windows.append((None, context, continuation))
                owner.append(index)
        totals = [0.0] * len(requests)
        for index, (score, _) in zip(owner, self._loglikelihood_tokens(windows)):
            totals[index] += score
        for req, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return totals

    # ---- generation -------------------------------------------------------------------------------------------------
    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        """Greedy continuations, each cut at the first of its stop sequences (``until``, and EOS)."""
        from stateft.generation import generate_batch

        jobs = []
        for req in requests:
            context, gen_kwargs = req.args
            kwargs = dict(gen_kwargs or {})
            if kwargs.get("do_sample"):
                raise UserError("--model stateft decodes greedily; this task asks for sampling (do_sample=True)")
            until = handle_stop_sequences(kwargs.get("until"), eos=self.tok_decode([self.eot_token_id]))
            new = _positive_int(kwargs.get("max_gen_toks", self.max_gen_toks), "max_gen_toks")
            ids = self.tok_encode(context)[-max(self.max_length - new, 1) :] or [self.prefix_token_id]
            jobs.append((ids, new, until))
        order = sorted(range(len(jobs)), key=lambda i: -len(jobs[i][0]))
        results = [""] * len(jobs)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            most = max(jobs[i][1] for i in chunk)
            outputs = generate_batch(
                self.model, [jobs[i][0] for i in chunk], max_new_tokens=most, num_beams=1, eos_id=self.eot_token_id
            )
            for i, tokens in zip(chunk, outputs):
                text = self.tok.decode(tokens[: jobs[i][1]])
                for stop in jobs[i][2]:
                    if stop:
                        text = text.split(stop)[0]
                results[i] = text
                self.cache_hook.add_partial("generate_until", requests[i].args, text)
        return results
