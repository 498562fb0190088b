"""recompute_saved: a saved tensor given a recipe is not kept by the graph, is remade in the backward, and the
gradients are unchanged; the Mamba-1 mixer's recipes (u, delta) are used and change no gradient."""

from __future__ import annotations

import pytest
import torch
from torch.multiprocessing.reductions import StorageWeakRef

from stateft.ops import recompute
from stateft.ops.recompute import recompute_saved


def _graph(with_recipe: bool):
    a = torch.randn(5, 7, generator=torch.Generator().manual_seed(0), requires_grad=True)
    x = a * 2  # an intermediate that sin saves for its backward
    calls = []

    def remake():
        calls.append(1)
        return a.detach() * 2

    with recompute_saved([(x, remake)] if with_recipe else []):
        y = x.sin()
    return a, y, StorageWeakRef(x.untyped_storage()), calls


def test_recipe_frees_the_tensor_and_gives_the_same_gradient():
    a, y, ref, calls = _graph(with_recipe=True)
    assert ref.expired()  # the graph holds the recipe, not x
    y.sum().backward()
    assert calls == [1]
    torch.testing.assert_close(a.grad, 2 * torch.cos(2 * a.detach()))
    a2, y2, ref2, _ = _graph(with_recipe=False)
    assert not ref2.expired()  # without it the graph keeps x
    y2.sum().backward()
    torch.testing.assert_close(a.grad, a2.grad)


def test_other_saved_tensors_are_untouched():
    a = torch.randn(4, requires_grad=True)
    b = torch.randn(4, requires_grad=True)
    x = a * 3
    with recompute_saved([(x, lambda: a.detach() * 3)]):
        y = (x * b).sum()  # mul saves x and b: only x by recipe
    y.backward()
    torch.testing.assert_close(b.grad, 3 * a.detach())
    torch.testing.assert_close(a.grad, 3 * b.detach())


@pytest.mark.parametrize("method", ["state_offset_h", "lora", "full"])
def test_mamba1_mixer_recipes_change_no_gradient(method, monkeypatch):
    """Triton path (interpreter on the CPU): the same gradients with and without recomputation; the recipes run in
    the backward (u and delta for a frozen projection; delta only when x_proj is trained, none for dt_proj's LoRA)."""
    pytest.importorskip("triton")
    from stateft.methods import apply_method
    from stateft.models.loading import build_model
    from tests.conftest import TINY

    ran = []
    original = recompute._Recipe.__call__
    monkeypatch.setattr(recompute._Recipe, "__call__", lambda self: ran.append(1) or original(self))
    grads = []
    for on in (True, False):
        model = build_model(TINY, seed=0)
        apply_method(method, model, {"name": method})
        model.scan_impl = "triton"
        for mixer in model.mixers():
            mixer.recompute = on
        ids = torch.randint(0, TINY.vocab_size, (2, 9), generator=torch.Generator().manual_seed(1))
        model(ids).float().pow(2).mean().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    per_layer = {"state_offset_h": 2, "lora": 1, "full": 1}[method]
    assert len(ran) == per_layer * TINY.n_layer
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-5, atol=1e-6, msg=name)
