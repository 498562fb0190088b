"""lm-evaluation-harness over stateft models: the ``stateft`` model type and MambaPEFT's eight-task test.

Importing this package registers ``stateft`` in lm-eval's model registry. lm-eval 0.4 finds no model types of other
packages by itself (it reads no entry points; ``--include_path`` adds tasks, not models), so its command line runs
as ``python -m stateft.harness`` (lm-eval's own arguments, after the registration):

    python -m stateft.harness --model stateft --model_args pretrained=mamba-130m,adapter=<run>/adapter \
        --tasks boolq,piqa --batch_size 64

``python eval.py harness=commonsense8 adapter=<run>/adapter`` runs conf/harness/commonsense8.yaml and writes the
run folder's metrics.json (``stateft.harness.tasks``).
"""

from stateft.harness.lm import StateftLM

__all__ = ["StateftLM"]
