"""Where an image model meets the app's configs (torch-free): the pairing of a vision model with a vision dataset,
and the run settings that follow from it.

- A vision model (``model.arch`` in ``VISION_ARCHS``) trains on a vision dataset (a DataModule of
  ``stateft.vision``) and a language model on a language dataset; any other pairing is refused in one line.
- The head's classes (``model.num_classes``) are the task's (``stateft.vision.tasks.VTAB_TASKS``, the one place they
  are written), set on the model node before the model is built, so the adapter records them.
- No tokenizer, and no CUDA-graph step (its recording is written for token batches): ``cuda_graph: auto`` becomes
  false, ``true`` is refused.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from stateft.app import pairing
from stateft.errors import UserError
from stateft.models.backbone import is_vision

VISION_DATA = "stateft.vision."  # the package of every vision DataModule (a dataset node's _target_)


def is_vision_dataset(node: Any) -> bool:
    return node is not None and str(node.get("_target_", "")).startswith(VISION_DATA)


def check_pairing(cfg: DictConfig) -> None:
    """One line if the model and the dataset are not both images or both text."""
    pairing.check_pairing(
        cfg,
        lambda model: is_vision(str(model.get("arch"))),
        is_vision_dataset,
        "model {model} classifies images but dataset {dataset} is text; "
        "choose a vision dataset (dataset=vtab_<task>) or a language model (model=mamba-130m ...)",
        "dataset {dataset} is images but model {model} is a language model; "
        "choose a vision model (model=vim-small, model=vim-tiny)",
    )


def bind_vision(cfg: DictConfig) -> DictConfig:
    """``cfg`` with the settings an image model takes from its task (module docstring); others unchanged."""
    check_pairing(cfg)
    if not is_vision(str(OmegaConf.select(cfg, "model.arch"))):
        return cfg
    if cfg.get("cuda_graph") is True:
        raise UserError("cuda_graph=true records token batches; an image model trains eagerly: set cuda_graph=false")
    from stateft.vision.tasks import VTAB_TASKS

    task = OmegaConf.select(cfg, "dataset.task")
    with open_dict(cfg):
        if task in VTAB_TASKS:
            cfg.model.num_classes = VTAB_TASKS[task].num_classes
        if "cuda_graph" in cfg:
            cfg.cuda_graph = False
    return cfg
