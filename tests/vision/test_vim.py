"""Vim's forward against a direct computation written from Vim's equations, on the released key layout."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from stateft.vision.loading import build_vim, from_ours
from tests.vision.conftest import tiny_config


def _rms(x, w, eps):
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * w


def _direction(p, prefix, suffix, xz, cfg):
    """One direction of a bimamba-v2 mixer on xz (l 2E), loops over positions and states (one image)."""
    E, N, K = cfg.d_inner, cfg.d_state, cfg.d_conv
    R = math.ceil(cfg.d_model / 16)
    x, z = xz[:, :E], xz[:, E:]
    conv_w, conv_b = p[f"{prefix}conv1d{suffix}.weight"][:, 0], p[f"{prefix}conv1d{suffix}.bias"]
    A_key = f"{prefix}A_log" if not suffix else f"{prefix}A_b_log"
    A = -torch.exp(p[A_key])  # (E N)
    D = p[f"{prefix}D{suffix}"]
    W_x, W_dt = p[f"{prefix}x_proj{suffix}.weight"], p[f"{prefix}dt_proj{suffix}.weight"]
    b_dt = p[f"{prefix}dt_proj{suffix}.bias"]
    length = x.shape[0]
    u = torch.zeros_like(x)
    for t in range(length):  # causal depthwise conv: position t sees inputs t-K+1 .. t (zeros before 0)
        acc = conv_b.clone()
        for k in range(K):
            s = t - (K - 1) + k
            if s >= 0:
                acc = acc + conv_w[:, k] * x[s]
        u[t] = F.silu(acc)
    h = torch.zeros(E, N, dtype=x.dtype)
    y = torch.zeros_like(x)
    for t in range(length):
        proj = W_x @ u[t]
        dt_r, B, C = proj[:R], proj[R : R + N], proj[R + N :]
        delta = F.softplus(W_dt @ dt_r + b_dt)  # (E)
        h = torch.exp(delta[:, None] * A) * h + delta[:, None] * B[None, :] * u[t][:, None]
        y[t] = ((h * C[None, :]).sum(-1) + D * u[t]) * F.silu(z[t])
    return y


def direct_vim(p, image, cfg, prompt=None):
    """Vim on one image (C H W) in float64, from the released tensors ``p`` -> logits. ``prompt`` (P d): MambaPEFT's
    prefix_suffix prompts, the first ceil(P/2) before the sequence, the rest after it."""
    P = cfg.patch_size
    g = cfg.grid_size
    patches = []
    for r in range(g):  # row-major patches, each a dot product with the conv kernel
        for c in range(g):
            window = image[:, r * cfg.stride : r * cfg.stride + P, c * cfg.stride : c * cfg.stride + P]
            patches.append((p["patch_embed.proj.weight"] * window[None]).sum((1, 2, 3)) + p["patch_embed.proj.bias"])
    M = len(patches)
    tokens = patches[: M // 2] + [p["cls_token"][0, 0]] + patches[M // 2 :]
    x = torch.stack(tokens) + p["pos_embed"][0]
    cls = M // 2
    if prompt is not None:
        before = -(-prompt.shape[0] // 2)
        x = torch.cat([prompt[:before], x, prompt[before:]])
        cls += before
    residual, out = x, None
    for i in range(cfg.n_layer):
        residual = residual if out is None else residual + out
        normed = _rms(residual, p[f"layers.{i}.norm.weight"], cfg.rms_norm_eps)
        prefix = f"layers.{i}.mixer."
        xz = normed @ p[f"{prefix}in_proj.weight"].T
        y_f = _direction(p, prefix, "", xz, cfg)
        y_b = _direction(p, prefix, "_b", xz.flip(0), cfg).flip(0)
        out = ((y_f + y_b) / 2) @ p[f"{prefix}out_proj.weight"].T
    final = _rms(residual + out, p["norm_f.weight"], cfg.rms_norm_eps)
    return final[cls] @ p["head.weight"].T + p["head.bias"]


@pytest.mark.parametrize("img_size", [16, 12])  # 16 and 9 patches: an even and an odd count around the class token
def test_forward_equals_the_direct_computation(img_size):
    cfg = tiny_config(img_size=img_size, drop_path_rate=0.3)
    model = build_vim(cfg, seed=0, backend="ref").eval()
    torch.nn.init.normal_(model.head.weight, std=0.5)  # a fresh head is zero: make the logits depend on everything
    torch.nn.init.normal_(model.head.bias, std=0.5)
    images = torch.randn(3, 3, img_size, img_size)
    with torch.no_grad():
        logits = model(images)
    released = {k: v.double() for k, v in from_ours(model.state_dict()).items()}
    for row in range(3):
        want = direct_vim(released, images[row].double(), cfg)
        torch.testing.assert_close(logits[row].double(), want, rtol=1e-5, atol=1e-5)


def test_prompt_tokens_go_before_and_after_the_image():
    from stateft.methods import apply_method
    from stateft.methods.configs import validate_method_cfg

    cfg = tiny_config()
    model = build_vim(cfg, seed=2, backend="ref").eval()
    torch.nn.init.normal_(model.head.weight, std=0.5)
    apply_method("prompt", model, validate_method_cfg({"name": "prompt", "num_virtual_tokens": 3}))
    images = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        logits = model(images)
        hidden = model.hidden_states(images)
    assert hidden.shape == (2, cfg.num_patches + 1, cfg.d_model)  # the prompt positions dropped
    released = {k: v.double() for k, v in from_ours(model.state_dict()).items() if not k.startswith("prompt.")}
    prompt = model.prompt.embeddings.detach().double()
    for row in range(2):
        want = direct_vim(released, images[row].double(), cfg, prompt)
        torch.testing.assert_close(logits[row].double(), want, rtol=1e-5, atol=1e-5)


def _silence(model, direction: str) -> None:
    """Zero one direction's output in every layer (C = 0 and D = 0: y = 0 whatever the input)."""
    for layer in model.layers:
        scan = getattr(layer.mixer, direction)
        scan.D.zero_()
        scan.x_proj.weight[-scan.d_state :].zero_()


@pytest.mark.parametrize(("silenced", "reached", "missed"), [("backward_scan", 0, 15), ("forward_scan", 15, 0)])
def test_the_middle_class_token_sees_earlier_patches_forward_and_later_ones_backward(silenced, reached, missed):
    """With one direction silenced, the class token (position 8 of 17) still sees the patches on the other
    direction's side and none on the silenced one's: the two scans run in opposite directions around it."""
    cfg = tiny_config()
    assert cfg.cls_position == cfg.num_patches // 2 == 8
    model = build_vim(cfg, seed=1, backend="ref").eval()
    torch.nn.init.normal_(model.head.weight)
    x = torch.randn(1, 3, 16, 16)

    def moved(patch: int) -> bool:
        changed = x.clone()
        r, c = divmod(patch, 4)
        changed[..., 4 * r : 4 * r + 4, 4 * c : 4 * c + 4] += 1.0
        return not torch.allclose(model(changed), model(x))

    with torch.no_grad():
        assert moved(0)
        assert moved(15)
        _silence(model, silenced)
        assert moved(reached)
        assert not moved(missed)


def test_drop_path_only_acts_while_training():
    cfg = tiny_config(drop_path_rate=0.5)
    model = build_vim(cfg, seed=0, backend="ref")
    torch.nn.init.normal_(model.head.weight)
    x = torch.randn(4, 3, 16, 16)
    model.eval()
    with torch.no_grad():
        a, b = model(x), model(x)
        model.train()
        torch.manual_seed(0)
        c = model(x)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)
