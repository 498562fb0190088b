"""A naive decoder, the reference of the generation tests: every step runs the model's full parallel forward over the
whole sequence (prompt and tokens so far), one prompt at a time; no cache, no recorded steps, no padding.

Its rules are the ones `stateft.generation` states, written out from them:

- greedy: append the argmax of the last position's logits over the real vocabulary (the first index of the maximum);
  stop at EOS (not appended) or after ``max_new_tokens``.
- beam search, k beams: a candidate is a beam extended by one token, scored by the beam's sum of fp32 log-probs
  (log-softmax over the real vocabulary) plus the token's, added in fp32. Each step ranks all candidates (equal
  scores: the lower (beam, token) index first) and walks the top 2k in rank order until k beams are kept: an EOS
  candidate ranked among the first k finishes its beam, scored sum / (tokens + 1) ** length_penalty (the EOS
  counts); one ranked lower is dropped; any other candidate is kept as a next beam. The search is done once k
  hypotheses have finished and the top candidate's score (EOS or not) / (step + 1) ** length_penalty is no better
  than the k-th best finished score; then the answer is the best finished hypothesis, else (at the limit) the best of
  the finished and the running ones, a running beam scored sum / len ** length_penalty. Among equal scores the
  first wins (finished in the order they finished, then the running beams in rank order).
"""

from __future__ import annotations

import torch


def _last_logits(model: torch.nn.Module, rows: list[list[int]], vocab: int) -> torch.Tensor:
    """The full forward's logits at the last position of each row (rows of equal length), real vocabulary only."""
    with torch.no_grad():
        return model(torch.tensor(rows))[:, -1, :vocab]


def naive_greedy(model, prompt: list[int], max_new_tokens: int, eos_id: int | None, vocab: int) -> list[int]:
    out: list[int] = []
    for _ in range(max_new_tokens):
        row = _last_logits(model, [prompt + out], vocab)[0].tolist()
        token = row.index(max(row))
        if token == eos_id:
            break
        out.append(token)
    return out


def naive_beam(
    model, prompt: list[int], max_new_tokens: int, num_beams: int, eos_id: int | None, length_penalty: float, vocab: int
) -> list[int]:
    k = num_beams
    beams: list[tuple[float, list[int]]] = [(0.0, [])]  # (sum of log-probs, an fp32 value; tokens)
    finished: list[tuple[float, list[int]]] = []
    for step in range(max_new_tokens):
        logprobs = torch.log_softmax(_last_logits(model, [prompt + b for _, b in beams], vocab).float(), dim=-1)
        candidates = []  # (score, beam index, token)
        for index, ((score, _), row) in enumerate(zip(beams, logprobs)):
            sums = torch.tensor(score, dtype=torch.float32) + row  # added in fp32
            candidates += [(s, index, t) for t, s in enumerate(sums.tolist())]
        candidates.sort(key=lambda c: (-c[0], c[1], c[2]))
        top = candidates[: 2 * k]
        kept = []
        for rank, (score, index, token) in enumerate(top):
            tokens = beams[index][1]
            if token == eos_id:
                if rank < k:
                    finished.append((score / (len(tokens) + 1) ** length_penalty, tokens))
                continue
            kept.append((score, tokens + [token]))
            if len(kept) == k:
                break
        if len(finished) >= k and top[0][0] / (step + 1) ** length_penalty <= sorted(s for s, _ in finished)[-k]:
            return _first_best(finished)
        beams = kept
    running = [(s / max(len(b), 1) ** length_penalty, b) for s, b in beams]
    return _first_best(finished + running)


def _first_best(scored: list[tuple[float, list[int]]]) -> list[int]:
    best = scored[0]
    for item in scored[1:]:
        if item[0] > best[0]:
            best = item
    return best[1]


def naive_decode(
    model,
    prompt: list[int],
    max_new_tokens: int,
    num_beams: int = 1,
    eos_id: int | None = 0,
    length_penalty: float = 1.0,
) -> list[int]:
    """The new tokens for ``prompt`` (without EOS): greedy for ``num_beams`` 1, else beam search."""
    vocab = model.config.vocab_size
    if num_beams == 1:
        return naive_greedy(model, prompt, max_new_tokens, eos_id, vocab)
    return naive_beam(model, prompt, max_new_tokens, num_beams, eos_id, length_penalty, vocab)
