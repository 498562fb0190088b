"""Deep S4 models and their PEFT methods: the SDT paper's deep-S4 experiments (Galim et al., 2024, arXiv:2410.09016).

Apart from the Mamba application (no Hydra, no Lightning): a stand-alone model family for the paper's synthetic
and small-vision experiments.

- ``kernel``: ZOH discretisation of the diagonal SSM and its convolution kernel (Vandermonde), with a twin by powers.
- ``fftconv``: the causal convolution y = k * u by FFT, with a direct twin.
- ``s4d``: the S4D layer (state-spaces' ``s4d.py`` parametrisation): convolution mode and recurrent ``step``.
- ``block``: an S4D layer with its pointwise output (GELU + linear + GLU, or the SDT code's linear + ReLU).
- ``model``: ``DeepS4``, encoder, residual (pre)norm blocks and a regression or classification head.
- ``deltas``: frozen weight + trainable delta parametrisations (selected entries, selected columns, low rank).
- ``selection``: SDT's dimension selection after the warm-up (by magnitude, the SDT code's default).
- ``warmup``: the warm-up run on a copy of the model.
- ``peft``: the methods (frozen, full, lora, sdt, sdlora) applied to a ``DeepS4``.
- ``synthetic``: the paper's synthetic experiment, ``python -m stateft.s4.synthetic``.

Only the diagonal S4D layer exists; the DPLR (S4 with a low-rank correction, Cauchy kernel) layer does not.
"""
