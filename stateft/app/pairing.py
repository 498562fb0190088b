"""A model kind that trains only on its own kind of data (torch-free): image models on image datasets
(``stateft.vision.app``), deep S4 models on the SDT paper's S4 tasks (``stateft.s4.runner``). Either mismatch, a model
of the kind on other data or data of the kind under another model, is refused in one line.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, OmegaConf

from stateft.errors import UserError


def check_pairing(
    cfg: DictConfig,
    model_is: Callable[[Any], bool],
    data_is: Callable[[Any], bool],
    model_refusal: str,
    data_refusal: str,
) -> None:
    """Refuse ``cfg``'s model and dataset nodes when exactly one of them is of the kind (``model_is(model)``,
    ``data_is(dataset)``): ``model_refusal`` when the model is, ``data_refusal`` when the data is, each formatted
    with the nodes' names (``{model}``, ``{dataset}``). A config without either node passes."""
    model, dataset = OmegaConf.select(cfg, "model"), OmegaConf.select(cfg, "dataset")
    if model is None or dataset is None:
        return
    names = {"model": model.get("name"), "dataset": dataset.get("name")}
    model_of_kind, data_of_kind = model_is(model), data_is(dataset)
    if model_of_kind and not data_of_kind:
        raise UserError(model_refusal.format(**names))
    if data_of_kind and not model_of_kind:
        raise UserError(data_refusal.format(**names))
