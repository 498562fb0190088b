"""``--model stateft`` under lm-evaluation-harness: a multiple-choice task over local fixture rows end to end, every
log-likelihood equal to one unpadded full-sequence forward (fp32, 1e-5), with and without an adapter; rolling
log-likelihoods and greedy generation against direct computations; bad input as one line."""

from __future__ import annotations

import pytest
import torch
from lm_eval.api.instance import Instance
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

from stateft.errors import UserError
from stateft.generation import generate
from stateft.harness import StateftLM
from stateft.harness.tasks import run_tasks
from stateft.tokenizer import load_tokenizer
from tests.harness.conftest import TASKS, direct_loglikelihood, save_tiny_adapter, tiny

TOL = 1e-5


def _check_samples(output: dict, model) -> list[list[float]]:
    """Every request's (log-likelihood, greedy) == the direct computation; returns each document's choice scores."""
    tok = load_tokenizer()
    scores = []
    for sample in output["samples"]["stateft_tiny_mc"]:
        doc_scores = []
        for (context, continuation), response in zip(sample["arguments"], sample["resps"]):
            got, greedy = response[0]
            want, want_greedy = direct_loglikelihood(model, tok, context, continuation)
            assert got == pytest.approx(want, abs=TOL, rel=0)
            assert greedy == want_greedy
            doc_scores.append(want)
        scores.append(doc_scores)
    return scores


def test_multiple_choice_task_matches_direct_loglikelihoods(at_repo):
    lm = StateftLM(pretrained="mamba-tiny", batch_size=3, device="cpu")  # 3: batches of mixed lengths, padded
    metrics, output = run_tasks(lm, {"stateft_tiny_mc": "acc"}, include_path=str(TASKS), log_samples=True)
    scores = _check_samples(output, tiny())
    docs = [sample["doc"] for sample in output["samples"]["stateft_tiny_mc"]]
    assert [len(s) for s in scores] == [len(d["choices"]) for d in docs]  # every choice of every document scored
    assert len(scores) == 5
    accuracy = sum(max(range(len(s)), key=s.__getitem__) == d["label"] for s, d in zip(scores, docs)) / len(docs)
    assert metrics["harness/stateft_tiny_mc/acc"] == pytest.approx(accuracy)
    assert metrics["harness/stateft_tiny_mc"] == metrics["harness/average"] == metrics["harness/stateft_tiny_mc/acc"]
    assert "harness/stateft_tiny_mc/acc_norm" in metrics


def test_adapter_is_applied(at_repo, tmp_path):
    adapter = save_tiny_adapter(tmp_path / "adapter", "lora", {"r": 4})
    lm = StateftLM(adapter=str(adapter), batch_size=4, device="cpu")  # the base: the adapter's record (mamba-tiny)
    _, output = run_tasks(lm, {"stateft_tiny_mc": "acc"}, include_path=str(TASKS), log_samples=True)
    with_adapter = _check_samples(output, tiny(adapter))
    tok = load_tokenizer()
    sample = output["samples"]["stateft_tiny_mc"][0]
    base = direct_loglikelihood(tiny(), tok, *sample["arguments"][0])[0]
    assert abs(base - with_adapter[0][0]) > 1e-3  # the adapter changes the scores


def _instances(kind: str, args: list[tuple]) -> list[Instance]:
    return [Instance(kind, {}, a, i) for i, a in enumerate(args)]


@torch.no_grad()
def test_rolling_loglikelihood_matches_direct_windows():
    model, tok = tiny(), load_tokenizer()
    texts = ["The quick brown fox jumps over the lazy dog. " * 3, "Short text."]
    for max_length in (2048, 8):  # one window; several disjoint windows of 8 tokens
        lm = StateftLM(model=model, tokenizer=tok, max_length=max_length, batch_size=2, device="cpu")
        got = lm.loglikelihood_rolling(_instances("loglikelihood_rolling", [(t,) for t in texts]))
        for text, value in zip(texts, got):
            want = 0.0
            windows = get_rolling_token_windows(tok.encode(text), tok.eos_id, max_length, 1)
            for context, continuation in map(make_disjoint_window, windows):
                ids = context + continuation
                log_probs = torch.log_softmax(model(torch.tensor([ids]))[0].float(), dim=-1)
                n = len(context)
                want += sum(float(log_probs[i - 1, ids[i]]) for i in range(n, len(ids)))
            assert value == pytest.approx(want, abs=TOL, rel=0)
    whole = [tok.eos_id, *tok.encode(texts[1])]
    log_probs = torch.log_softmax(model(torch.tensor([whole]))[0].float(), dim=-1)
    full = sum(float(log_probs[i - 1, whole[i]]) for i in range(1, len(whole)))
    lm = StateftLM(model=model, tokenizer=tok, batch_size=2, device="cpu")
    assert lm.loglikelihood_rolling(_instances("loglikelihood_rolling", [(texts[1],)]))[0] == pytest.approx(full)


def test_generate_until_is_greedy_and_stops():
    model, tok = tiny(), load_tokenizer()
    lm = StateftLM(model=model, tokenizer=tok, batch_size=2, device="cpu")
    contexts = ["Once upon a time", "Q: what is two plus two?\nA:", "Hello"]
    args = [(c, {"until": ["\n"], "max_gen_toks": n}) for c, n in zip(contexts, (6, 4, 5))]
    got = lm.generate_until(_instances("generate_until", args))
    for (context, kwargs), text in zip(args, got):
        tokens = generate(model, tok.encode(context), max_new_tokens=kwargs["max_gen_toks"], num_beams=1, eos_id=0)
        assert text == tok.decode(tokens).split("\n")[0]


def test_bad_input_is_one_line(at_repo, tmp_path):
    from tests.conftest import TINY
    from tests.serve.helpers import save_random_adapter

    lm = StateftLM(pretrained="mamba-tiny", device="cpu")
    with pytest.raises(UserError, match="lm-eval has no task 'no_such_task'") as err:
        run_tasks(lm, {"no_such_task": "acc"}, include_path=str(TASKS))
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="no metric 'f1'"):
        run_tasks(lm, {"stateft_tiny_mc": "f1"}, include_path=str(TASKS), limit=1)
    other = save_random_adapter(TINY, "state_offset_h", {}, 1, tmp_path / "other")  # vocab 64, width 16
    with pytest.raises(UserError, match="trained on another base model") as err:
        StateftLM(pretrained="mamba-tiny", adapter=str(other), device="cpu")
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="trust_remote_code: not an option"):
        StateftLM(pretrained="mamba-tiny", trust_remote_code=True)
    with pytest.raises(UserError, match="batch_size='many'"):
        StateftLM(pretrained="mamba-tiny", batch_size="many")
