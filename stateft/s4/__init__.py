"""Deep S4 models and their PEFT methods: the SDT paper's deep-S4 experiments (Galim et al., ICML 2025,
arXiv:2410.09016; the SDT code's ``S4/``), run by ``python train.py experiment=sdt_s4/<synthetic|transfer>``.

Model (``model.arch`` s4d or s4, ``stateft.models.backbone.S4_ARCHS``; not a language model):
- ``kernel``: ZOH discretisation of the diagonal SSM and its convolution kernel (Vandermonde), with a twin by powers.
- ``fftconv``: the causal convolution y = k * u by FFT, with a direct twin.
- ``s4d``: the S4D layer (state-spaces' ``s4d.py`` parametrisation): convolution mode and recurrent ``step``.
- ``dplr``: the S4 layer with a diagonal plus low-rank A (state-spaces' ``s4.py``, HiPPO-LegS init, bilinear):
  the Cauchy / generating-function kernel with a dense twin, and ``step``.
- ``block``: an SSM layer with its pointwise output (GELU + linear + GLU, or the SDT code's linear + ReLU).
- ``model``: ``DeepS4``, encoder, residual (pre)norm blocks and a regression or classification head.
Methods (the registry's s4_frozen, s4_full, s4_lora, s4_sdt, s4_sdlora; options in ``stateft.methods.configs``):
- ``stateft.methods.deltas`` (shared with Mamba's SDT): frozen weight + trainable delta parametrisations (entries,
  columns, low rank, complex low rank, dense).
- ``selection``: SDT's choice by magnitude after the warm-up (the paper's); ``choose``: every ``select_by`` mode.
- ``warmup``: the warm-up run on a copy of the model.
- ``peft``: each method applied to a ``DeepS4`` (and soft mode's L1 penalty); ``methods``: the registry entries.
Experiments:
- ``adamw``: the SDT code's AdamW loop, which the warm-up, pretraining and tuning run.
- ``train``: apply a method through the registry, then AdamW; ``runner``: train.py's entry for S4 runs.
- ``synthetic``: a frozen random deep S4 fitted to a random target S4; ``pixels`` + ``transfer``: pretrain on one
  pixel-sequence dataset (sequential MNIST, grayscale CIFAR-10, from their raw files), tune on the other.
- ``report``: the table, the figure (metric against trainable parameters), JSON, loggers.
"""
