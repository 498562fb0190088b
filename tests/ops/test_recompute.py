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


def test_one_remake_serves_every_saved_copy_and_derived_tensors():
    """x saved by two ops and, through a derived tensor (a mask applied to it), by a third: remade once."""
    from stateft.ops.recompute import derive

    def run(with_recipe):
        a = torch.arange(6.0, requires_grad=True)
        w = torch.linspace(-1, 1, 6, requires_grad=True)
        keep = torch.tensor([True, False, True, True, False, True])
        x = a * 2
        calls = []

        def remake():
            calls.append(1)
            return a.detach() * 2

        with recompute_saved([(x, remake)] if with_recipe else []):
            xd = torch.where(keep, x, 0.0)
            derive(xd, x, lambda x_: torch.where(keep, x_, 0.0))
            y = (x.sin() + x.cos() + xd * w).sum()  # sin and cos save x, the product saves xd (for w's gradient)
        y.backward()
        return a.grad, w.grad, calls

    a1, w1, calls = run(True)
    a2, w2, _ = run(False)
    assert calls == [1]
    torch.testing.assert_close(a1, a2)
    torch.testing.assert_close(w1, w2)


@pytest.mark.parametrize("method", ["state_offset_h", "lora", "full", "sdt"])
def test_mamba1_mixer_recipes_change_no_gradient(method, monkeypatch):
    """Triton path (interpreter on the CPU): the same gradients with and without recomputation (LoRA with its
    dropout on); the recipes run in the backward, u once for all its users: u and delta for the scan; with LoRA u
    (for the scan and for its dropout output, which A's product keeps; delta is dt_proj's LoRA output, not remade);
    with full fine-tuning u (the scan and x_proj's weight gradient) and delta; with sdt (x_proj's weight a
    parametrisation) u and delta."""
    pytest.importorskip("triton")
    from stateft.methods import apply_method
    from stateft.models.loading import build_model
    from tests.conftest import TINY
    from tests.ops.kernel_settings import SETTINGS

    ran = []
    original = recompute._Maker.__init__

    def counting(self, make, src=None):  # count the remakes of the base recipes (u, delta), not derived ones
        original(self, (lambda: ran.append(1) or make()) if src is None else make, src)

    monkeypatch.setattr(recompute._Maker, "__init__", counting)
    grads = []
    for on in (True, False):
        model = build_model(TINY, seed=0)
        # sdt: a stored selection (no warm-up), 16 of 32 channels x 1 of 4 states
        selection = [[list(range(0, 32, 2)), [[1]] * 16]] * TINY.n_layer if method == "sdt" else None
        apply_method(method, model, {"name": method, **({"selection": selection} if selection else {})})
        model.set_backend(impl="triton", recompute=on, settings=SETTINGS)
        assert all(mixer.backend.recomputes == on for mixer in model.mixers())
        ids = torch.randint(0, TINY.vocab_size, (2, 9), generator=torch.Generator().manual_seed(1))
        torch.manual_seed(2)  # the same dropout masks in both runs
        model(ids).float().pow(2).mean().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    per_layer = {"state_offset_h": 2, "lora": 1, "full": 2, "sdt": 2}[method]  # u remade once for all its users
    assert len(ran) == per_layer * TINY.n_layer
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-5, atol=1e-6, msg=name)
