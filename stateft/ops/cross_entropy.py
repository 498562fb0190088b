"""Chunked linear + cross-entropy: the LM head and the token loss without full-vocabulary fp32 logits.

For a batch of 4 x 1024 tokens and a 50,280-word vocabulary, fp32 logits are 824 MB (and their gradient as much
again); for the 130m model that is more than the whole rest of a PEFT step. Here the tokens are taken ``chunk_size``
at a time: logits for one chunk, log-softmax in fp32, the loss, and at once the gradient of the loss with respect to
the chunk's hidden states (and to the head weight, if it is trained). Nothing of the chunk is kept, so the peak is
one chunk's logits, and the backward only rescales the stored gradients by the incoming one.
"""

from __future__ import annotations

import torch
from torch import Tensor

from stateft.ops.backend import Backend, backend_for
from stateft.ops.interfaces import implementation
from stateft.ops.settings import DEFAULT_SETTINGS, CrossEntropySettings


def chunk_loss_ref(
    *,
    h: Tensor,
    weight: Tensor,
    labels: Tensor,
    ignore_index: int,
    want_grad: bool,
    settings: CrossEntropySettings = DEFAULT_SETTINGS.cross_entropy,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Summed loss over one chunk's valid tokens, d(sum)/dh and d(sum)/dweight (or Nones) in torch
    (`interfaces.ChunkLoss`; ``settings`` unused). h (t d), labels (t,)."""
    h = h.to(weight.dtype)
    logits = (h @ weight.t()).float()  # (t V) fp32 for this chunk only
    valid = labels != ignore_index
    target = torch.where(valid, labels, 0)
    lse = torch.logsumexp(logits, dim=-1)  # (t,)
    picked = logits.gather(1, target[:, None])[:, 0]
    loss = ((lse - picked) * valid).sum()
    if not want_grad:
        return loss, None, None
    # softmax - onehot, written once in the head's dtype (exp of the fp32 logits cast on the way out); ignored rows
    # are zeroed on the (t d) side: (diag(valid) G) W = diag(valid) (G W), G^T diag(valid) h = G^T (valid h)
    grad_logits = torch.exp(logits.sub_(lse[:, None]), out=torch.empty_like(logits, dtype=weight.dtype))
    grad_logits.scatter_add_(1, target[:, None], -torch.ones_like(grad_logits[:, :1]))
    keep = valid[:, None].to(weight.dtype)
    grad_h = (grad_logits @ weight) * keep  # (t d)
    grad_w = grad_logits.t() @ (h * keep) if weight.requires_grad else None  # (V d)
    return loss, grad_h, grad_w


class _ChunkedLinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, labels, ignore_index, chunk_size, want_grad, chunk_loss, settings):
        d = hidden.shape[-1]
        h = hidden.reshape(-1, d)
        y = labels.reshape(-1)
        count = (y != ignore_index).sum()
        total = h.new_zeros((), dtype=torch.float32)
        grad_h = torch.empty_like(h) if want_grad else None
        train_w = want_grad and weight.requires_grad  # a frozen head needs no (V d) fp32 gradient buffer
        grad_w = torch.zeros(weight.shape, device=weight.device, dtype=torch.float32) if train_w else None
        for start in range(0, h.shape[0], chunk_size):
            sl = slice(start, start + chunk_size)
            loss, gh, gw = chunk_loss(
                h=h[sl], weight=weight, labels=y[sl], ignore_index=ignore_index, want_grad=want_grad, settings=settings
            )
            total += loss
            if want_grad:
                grad_h[sl] = gh
                if gw is not None:
                    grad_w += gw
        count = count.clamp_min(1).float()
        if want_grad:
            ctx.save_for_backward(grad_h, grad_w, count)
            ctx.shapes = (hidden.shape, weight.dtype)
        return total / count

    @staticmethod
    def backward(ctx, grad_out):
        grad_h, grad_w, count = ctx.saved_tensors
        shape, w_dtype = ctx.shapes
        scale = grad_out / count
        dh = (grad_h * scale.to(grad_h.dtype)).reshape(shape)
        dw = None if grad_w is None else (grad_w * scale).to(w_dtype)
        return dh, dw, None, None, None, None, None, None


def chunked_cross_entropy(
    *,
    hidden: Tensor,
    weight: Tensor,
    labels: Tensor,
    ignore_index: int = -100,
    chunk_size: int = 1024,
    backend: Backend | str = "auto",
) -> Tensor:
    """Mean cross-entropy of ``hidden @ weight.T`` against ``labels`` over the tokens whose label is not ignored.

    hidden (b l d) (or (t d)); weight (V d), the LM head (gradient computed only if it requires grad); labels (b l),
    already aligned with ``hidden`` (position i is scored against labels[i]). Logits are computed in ``weight``'s dtype
    and normalised in fp32, ``chunk_size`` tokens at a time; full-vocabulary logits never exist for all tokens.
    Returns a scalar fp32 (0 if every label is ignored).

    Each chunk runs ``backend.cross_entropy`` (a `Backend`, or a ``scan_impl`` name resolved for hidden's device):
    ``ref`` (`chunk_loss_ref`, any device) or ``triton`` (`cross_entropy_triton.chunk_loss_triton`: one kernel per
    chunk instead of ~7 full-vocabulary passes; CUDA, or the CPU under ``TRITON_INTERPRET=1``).
    """
    backend = backend_for(backend, hidden)
    chunk_loss = implementation("cross_entropy", backend.cross_entropy)
    want_grad = torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)
    return _ChunkedLinearCrossEntropy.apply(
        hidden, weight, labels, ignore_index, chunk_size, want_grad, chunk_loss, backend.settings.cross_entropy
    )
