"""Greedy and beam-search decoding over ``MambaLM.step`` with the recurrent cache.

``generate_batch`` decodes many prompts at once, each row's tokens as it gets them alone; ``generate`` is it on a
batch of one. A Transformer's batch goes to its own ``generate_batch`` (transformers' ``generate`` with a KV cache,
`stateft.models.pythia_generation`).

The prompt goes through the parallel forward once (prefill; the start-of-sequence slots of prompt/prefix/initial-state
methods apply there), then one ``step`` per new token. In a batch, the prompts are prefilled together, right-padded
to the longest, and the padding never enters a state or a conv window (`prefill`); the decoding steps then run over
all rows at once, and an example's rows leave the batch when it finishes (`stateft.decode_graph.RowStep`).
Beam search keeps ``num_beams`` rows per example and reorders them after every step; finished hypotheses are scored by
sum log-prob / length**length_penalty (transformers' convention, length = generated tokens including EOS).
"""

from __future__ import annotations

import torch
from torch import Tensor

from stateft.decode_graph import RowStep
from stateft.models.backbone import is_transformer
from stateft.models.cache import MambaCache
from stateft.models.lm import MambaLM
from stateft.ops.invariance import batch_invariant as invariant_products


def log_probs(logits: Tensor, vocab_size: int) -> Tensor:
    """log-softmax over the real vocabulary (the padded rows dropped), in fp32."""
    return torch.log_softmax(logits[..., :vocab_size].float(), dim=-1)


def generate(
    model: torch.nn.Module,
    prompt_ids: list[int],
    max_new_tokens: int = 1024,
    num_beams: int = 1,
    eos_id: int | None = 0,
    length_penalty: float = 1.0,
    cuda_graph: bool = True,
    batch_invariant: bool = False,
) -> list[int]:
    """Continue ``prompt_ids``; returns the new tokens without the EOS token: ``generate_batch`` on a batch of one."""
    return generate_batch(
        model, [prompt_ids], max_new_tokens, num_beams, eos_id, length_penalty, cuda_graph, batch_invariant
    )[0]


def generate_batch(
    model: torch.nn.Module,
    prompts: list[list[int]],
    max_new_tokens: int = 1024,
    num_beams: int = 1,
    eos_id: int | None = 0,
    length_penalty: float = 1.0,
    cuda_graph: bool = True,
    batch_invariant: bool = False,
) -> list[list[int]]:
    """Continue every prompt, decoded as one batch; returns each prompt's new tokens without the EOS token, as the
    prompt gets them alone (bit for bit with ``batch_invariant``). On CUDA, ``cuda_graph`` replays recorded decoding
    steps after the first few tokens (`stateft.decode_graph`; same tokens, fewer launches). ``batch_invariant``: the
    products computed as in any batch (`stateft.ops.invariance`; without it a GPU's products round by their shape,
    cuBLAS picking its kernel by the row count, and under bf16 beam search can part where two candidates tie within
    rounding; on the CPU they round alike in practice, which the tests check)."""
    if is_transformer(model):
        return model.generate_batch(prompts, max_new_tokens, num_beams, eos_id, length_penalty)
    if not prompts:
        return []
    if max_new_tokens < 1:
        return [[] for _ in prompts]
    with torch.no_grad(), invariant_products(batch_invariant):
        return _generate_batch(model, prompts, max_new_tokens, num_beams, eos_id, length_penalty, cuda_graph)


def _generate_batch(model, prompts, max_new_tokens, num_beams, eos_id, length_penalty, cuda_graph) -> list[list[int]]:
    cache, logits = prefill(model, prompts)
    vocab = model.config.vocab_size
    if num_beams == 1:
        return greedy_batch(RowStep(model, cache, 1, cuda_graph), logits, max_new_tokens, eos_id, vocab)
    return beam_batch(
        RowStep(model, cache, num_beams, cuda_graph), logits, max_new_tokens, num_beams, eos_id, length_penalty, vocab
    )


def beam_batch(
    step: RowStep,
    logits: Tensor,
    max_new_tokens: int,
    num_beams: int,
    eos_id: int | None,
    length_penalty: float,
    vocab: int,
) -> list[list[int]]:
    """Beam search for every row of ``logits`` (b V, after the prefill) over ``step``: k rows per example,
    reordered after every step, an example's rows dropped once it is done (`stateft.serve` runs it over its own
    step, whose rows carry their adapters)."""
    device = logits.device
    searches = [Beams(num_beams, eos_id, length_penalty) for _ in range(logits.shape[0])]
    # num_beams copies of every prompt's state, example after example
    step.select(torch.arange(logits.shape[0], device=device).repeat_interleave(num_beams))
    logprobs = log_probs(logits, vocab)[:, None].expand(-1, num_beams, -1)  # (examples k V)
    active = list(range(logits.shape[0]))
    for i in range(max_new_tokens):
        scores = torch.tensor([searches[e].scores for e in active], device=device)  # (examples k)
        candidates = (scores[:, :, None] + logprobs).flatten(1)
        top_scores, top_index = (t.tolist() for t in candidates.topk(2 * num_beams, dim=1))
        rows: list[int] = []
        tokens: list[int] = []
        still = []
        for slot, e in enumerate(active):
            if searches[e].advance(top_scores[slot], top_index[slot], vocab, i + 1):
                continue
            still.append(e)
            rows += [slot * num_beams + r for r in searches[e].rows]
            tokens += searches[e].tokens
        active = still
        if not active or i + 1 == max_new_tokens:
            break
        step.select(torch.tensor(rows, device=device))
        logits = step(torch.tensor(tokens, device=device))
        logprobs = log_probs(logits, vocab).view(len(active), num_beams, -1)
    return [search.best() for search in searches]


def greedy_batch(step: RowStep, logits: Tensor, max_new_tokens: int, eos_id: int | None, vocab: int) -> list[list[int]]:
    """Greedy decoding for every row of ``logits`` (b V, after the prefill): each step appends the argmax of the real
    vocabulary; a row leaves the batch at its EOS (not appended)."""
    outputs: list[list[int]] = [[] for _ in range(logits.shape[0])]
    active = list(range(logits.shape[0]))
    for i in range(max_new_tokens):
        tokens = logits[:, :vocab].argmax(-1).tolist()
        kept = [slot for slot, token in enumerate(tokens) if token != eos_id]
        for slot in kept:
            outputs[active[slot]].append(tokens[slot])
        active = [active[slot] for slot in kept]
        if not active or i + 1 == max_new_tokens:
            break
        device = logits.device
        if len(kept) < len(tokens):  # rows left (kept is in order): otherwise the cache stays as it is, uncopied
            step.select(torch.tensor(kept, device=device))
        logits = step(torch.tensor([tokens[slot] for slot in kept], device=device))
    return outputs


def prefill(model: MambaLM, prompts: list[list[int]]) -> tuple[MambaCache, Tensor]:
    """Every prompt through one parallel forward, right-padded to the longest: (cache with a row per prompt in the
    given order, each row's state after its own tokens; the logits at each prompt's last token (b V_padded)).

    The padding leaves the states alone (``MambaLM.hidden_states``' ``lengths``: delta / dt 0 past a row's end, the
    conv window taken at its end), so a row's cache is its unpadded run's."""
    device = next(model.parameters()).device
    lengths = [len(p) for p in prompts]
    ids = torch.zeros(len(prompts), max(lengths), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, : len(prompt)] = torch.tensor(prompt, dtype=torch.long)
    ends = torch.tensor(lengths, device=device)
    cache = model.new_cache()
    padded = len(set(lengths)) > 1
    hidden = model.hidden_states(ids.to(device), cache, lengths=ends if padded else None)  # (b l d)
    last = hidden[torch.arange(len(prompts), device=device), ends - 1]  # (b d)
    return cache, model.lm_head(last)


def cat_in_order(caches: list[MambaCache], logits: list[Tensor], order: list[int]) -> tuple[MambaCache, Tensor]:
    """Groups of prefilled rows as one cache and one logits tensor in the prompts' order: ``order`` lists, group
    after group, which prompt each row is."""
    device = logits[0].device
    position = torch.empty(len(order), dtype=torch.long, device=device)
    position[torch.tensor(order, device=device)] = torch.arange(len(order), device=device)
    cache = MambaCache.cat(caches)
    cache.reorder(position)
    return cache, torch.cat(logits)[position]


class Beams:
    """One example's beam search, advanced one step at a time from the top 2k candidates of its k rows (greedy is
    k = 1). ``rows`` / ``tokens`` / ``scores``: which of the example's rows each kept beam continues, the token it
    appends, its sum log-prob."""

    def __init__(self, num_beams: int, eos_id: int | None, length_penalty: float) -> None:
        self.k, self.eos_id, self.length_penalty = num_beams, eos_id, length_penalty
        self.beams: list[list[int]] = [[] for _ in range(num_beams)]
        self.scores = [0.0] + [float("-inf")] * (num_beams - 1)  # all beams start identical: expand only the first
        self.finished: list[tuple[float, list[int]]] = []
        self.done = False
        self.rows: list[int] = []
        self.tokens: list[int] = []

    def advance(self, top_scores: list[float], top_index: list[int], vocab: int, length: int) -> bool:
        """Take the step's candidates (sorted, index = row * vocab + token); True once this example is done."""
        beams, rows, tokens, scores = [], [], [], []
        for rank, (score, index) in enumerate(zip(top_scores, top_index)):
            row, token = divmod(index, vocab)
            if token == self.eos_id:
                if rank < self.k:  # as transformers: an EOS ranked below the beam width does not finish
                    self.finished.append((score / (len(self.beams[row]) + 1) ** self.length_penalty, self.beams[row]))
                continue
            beams.append(self.beams[row] + [token])
            rows.append(row)
            tokens.append(token)
            scores.append(score)
            if len(beams) == self.k:
                break
        if _done(self.finished, self.k, top_scores[0], length, self.length_penalty):
            self.done = True
            return True
        self.beams, self.rows, self.tokens, self.scores = beams, rows, tokens, scores
        return False

    def best(self) -> list[int]:
        """The best hypothesis: among the finished ones once done, else among the finished and the running."""
        finished = list(self.finished)
        if not self.done:
            finished += [(s / max(len(b), 1) ** self.length_penalty, b) for b, s in zip(self.beams, self.scores)]
        return max(finished, key=lambda item: item[0])[1]


def _done(finished: list, num_beams: int, best_running: float, length: int, length_penalty: float) -> bool:
    """Stop once num_beams hypotheses finished and no running beam can still beat the worst of the best."""
    if len(finished) < num_beams:
        return False
    worst_kept = sorted(s for s, _ in finished)[-num_beams]
    return best_running / length**length_penalty <= worst_kept
