"""Vision Mamba (Vim) on VTAB-1k through the same app: MambaPEFT's vision experiments.

- ``config``: ``VimConfig``, the architecture numbers (torch-free).
- ``vim``: the model (patch embedding, middle class token, bidirectional Mamba-1 blocks, head) behind the backbone
  contract; its scan directions carry the mixer slots stateft's methods fill.
- ``loading``: random init and the released checkpoints (hustvl/Vim) in their own key layout.
- ``vtab``: the VTAB-1k DataModule (the common preprocessed folder layout), its 19 tasks and 3 groups, the scorer.
- ``classify``: the classification loss and predictions the training module runs on image batches.
- ``summary``: the table across the 19 tasks (per task, per group, the averages as the paper reports them).
"""
