"""Greedy and beam-search decoding over ``MambaLM.step`` with the recurrent cache; ``generate_batch`` for a batch of
prompts on any backbone (a Transformer's batch is decoded at once by its own ``generate_batch``: transformers'
``generate`` with a KV cache, `stateft.models.pythia_generation`).

The prompt goes through the parallel forward once (prefill; the start-of-sequence slots of prompt/prefix/initial-state
methods apply there), then one ``step`` per new token. Beam search keeps ``num_beams`` rows in the cache and reorders
them after every step; finished hypotheses are scored by sum log-prob / length**length_penalty (transformers'
convention, length = generated tokens including EOS).
"""

from __future__ import annotations

import torch
from torch import Tensor

from stateft.decode_graph import Step, make_step
from stateft.models.backbone import is_transformer
from stateft.models.lm import MambaLM


def _log_probs(logits: Tensor, vocab_size: int) -> Tensor:
    return torch.log_softmax(logits[..., :vocab_size].float(), dim=-1)


@torch.no_grad()
def generate(
    model: MambaLM,
    prompt_ids: list[int],
    max_new_tokens: int = 1024,
    num_beams: int = 1,
    eos_id: int | None = 0,
    length_penalty: float = 1.0,
    cuda_graph: bool = True,
) -> list[int]:
    """Continue ``prompt_ids``; returns the new tokens without the EOS token. On CUDA, ``cuda_graph`` replays a
    recorded decoding step after the first few tokens (`stateft.decode_graph`; same tokens, fewer launches)."""
    if is_transformer(model):
        return model.generate_batch([prompt_ids], max_new_tokens, num_beams, eos_id, length_penalty)[0]
    device = next(model.parameters()).device
    vocab = model.config.vocab_size
    cache = model.new_cache()
    ids = torch.tensor([prompt_ids], device=device)
    logits = model(ids, cache)[:, -1]  # (1 V)
    if num_beams == 1:
        return _greedy(make_step(model, cache, 1, cuda_graph), logits, max_new_tokens, eos_id, vocab)
    cache.reorder(torch.zeros(num_beams, dtype=torch.long, device=device))  # num_beams copies of the prompt's state
    step = make_step(model, cache, num_beams, cuda_graph)
    return _beam_search(step, cache, logits, max_new_tokens, num_beams, eos_id, length_penalty, vocab)


@torch.no_grad()
def generate_batch(
    model: torch.nn.Module,
    prompts: list[list[int]],
    max_new_tokens: int = 1024,
    num_beams: int = 1,
    eos_id: int | None = 0,
    length_penalty: float = 1.0,
) -> list[list[int]]:
    """``generate`` for every prompt: a Mamba decodes them one by one, a Transformer all at once (its
    ``generate_batch``; each row as it would alone)."""
    if is_transformer(model):
        return model.generate_batch(prompts, max_new_tokens, num_beams, eos_id, length_penalty)
    return [generate(model, p, max_new_tokens, num_beams, eos_id, length_penalty) for p in prompts]


def _greedy(step: Step, logits: Tensor, max_new_tokens: int, eos_id: int | None, vocab: int) -> list[int]:
    out: list[int] = []
    for i in range(max_new_tokens):
        token = int(logits[0, :vocab].argmax())
        if token == eos_id:
            break
        out.append(token)
        if i + 1 < max_new_tokens:
            logits = step(torch.tensor([token], device=logits.device))  # (1 V)
    return out


def _beam_search(
    step: Step,
    cache,
    logits: Tensor,
    max_new_tokens: int,
    num_beams: int,
    eos_id: int | None,
    length_penalty: float,
    vocab: int,
) -> list[int]:
    device = logits.device
    logprobs = _log_probs(logits, vocab).expand(num_beams, -1)  # (k V)
    scores = torch.full((num_beams,), float("-inf"), device=device)
    scores[0] = 0.0  # all beams start identical: expand only the first
    beams: list[list[int]] = [[] for _ in range(num_beams)]
    finished: list[tuple[float, list[int]]] = []
    for i in range(max_new_tokens):
        candidates = (scores[:, None] + logprobs).flatten()
        top_scores, top_index = candidates.topk(2 * num_beams)
        next_beams, next_rows, next_tokens, next_scores = [], [], [], []
        for rank, (score, index) in enumerate(zip(top_scores.tolist(), top_index.tolist())):
            row, token = divmod(index, vocab)
            if token == eos_id:
                if rank < num_beams:  # as transformers: an EOS ranked below the beam width does not finish
                    finished.append((score / (len(beams[row]) + 1) ** length_penalty, beams[row]))
                continue
            next_beams.append(beams[row] + [token])
            next_rows.append(row)
            next_tokens.append(token)
            next_scores.append(score)
            if len(next_beams) == num_beams:
                break
        if _done(finished, num_beams, top_scores[0].item(), i + 1, length_penalty):
            return max(finished, key=lambda item: item[0])[1]
        beams, scores = next_beams, torch.tensor(next_scores, device=device)
        if i + 1 == max_new_tokens:
            break
        cache.reorder(torch.tensor(next_rows, device=device))
        logprobs = _log_probs(step(torch.tensor(next_tokens, device=device)), vocab)
    for beam, score in zip(beams, scores.tolist()):
        finished.append((score / max(len(beam), 1) ** length_penalty, beam))
    return max(finished, key=lambda item: item[0])[1]


def _done(finished: list, num_beams: int, best_running: float, length: int, length_penalty: float) -> bool:
    """Stop once num_beams hypotheses finished and no running beam can still beat the worst of the best."""
    if len(finished) < num_beams:
        return False
    worst_kept = sorted(s for s, _ in finished)[-num_beams]
    return best_running / length**length_penalty <= worst_kept
