"""Architecture numbers of a Vision Mamba (Vim, Zhu et al. 2024): enough to build it (also on ``meta``) without a
download. Torch-free, so start-up checks and the adapter records read it cheaply.

Names follow the backbone contract (``stateft.models.backbone.ModelConfig``): ``d_model`` is Vim's ``embed_dim``,
``n_layer`` its ``depth``. The classification head has ``num_classes`` rows, which the contract's ``vocab_size`` /
``padded_vocab_size`` report (an adapter records them: its head is trained for one task's classes).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from stateft.models.config import SelectiveDims


@dataclass
class VimConfig(SelectiveDims):
    """Vim with bidirectional Mamba-1 blocks ("v2" bimamba), a middle class token and absolute position embeddings:
    the configuration of the released ``vim_t_midclstok`` / ``vim_s_midclstok`` checkpoints."""

    d_model: int  # Vim's embed_dim
    n_layer: int  # Vim's depth
    arch: Literal["vim"] = "vim"
    num_classes: int = 1000  # rows of the head: the task's classes (ImageNet-1k in the released checkpoints)
    img_size: int = 224
    patch_size: int = 16
    stride: int = 16  # patch stride (= patch_size: non-overlapping patches)
    channels: int = 3
    d_state: int = 16  # N
    d_conv: int = 4  # K
    expand: int = 2  # E = expand * d_model
    dt_rank: int | str = "auto"  # R = ceil(d_model / 16)
    rms_norm_eps: float = 1e-5
    conv_bias: bool = True
    bias: bool = False  # in_proj / out_proj bias
    divide_out: bool = True  # Vim's if_devide_out: the two directions' outputs are averaged, not summed
    drop_path_rate: float = 0.1  # stochastic depth while training (0 at layer 0, rising linearly to the last layer)
    # random-init ranges (mamba_ssm's defaults for dt; trunc-normal std of the position embedding and class token)
    dt_min: float = 0.001
    dt_max: float = 0.1
    dt_init_floor: float = 1e-4
    init_std: float = 0.02

    @property
    def grid_size(self) -> int:
        """Patches per side."""
        return (self.img_size - self.patch_size) // self.stride + 1

    @property
    def num_patches(self) -> int:
        return self.grid_size**2

    @property
    def cls_position(self) -> int:
        """Where the class token sits in the sequence: the middle, after num_patches // 2 patches."""
        return self.num_patches // 2

    @property
    def vocab_size(self) -> int:  # the contract's name for the head's rows
        return self.num_classes

    @property
    def padded_vocab_size(self) -> int:
        return self.num_classes

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
