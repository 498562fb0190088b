"""The 19 VTAB-1k tasks (Zhai et al. 2019) as the common preprocessed release lays them out (one folder per task;
the folder names of MambaPEFT's runs) and the three groups the papers average over. Torch-free."""

from __future__ import annotations

from dataclasses import dataclass

GROUPS = ("natural", "specialized", "structured")


@dataclass(frozen=True)
class VtabTask:
    folder: str  # the task's folder in the VTAB-1k root
    group: str  # natural | specialized | structured
    num_classes: int


# in the papers' table order: natural (7), specialized (4), structured (8)
VTAB_TASKS: dict[str, VtabTask] = {
    "cifar100": VtabTask("cifar", "natural", 100),
    "caltech101": VtabTask("caltech101", "natural", 102),
    "dtd": VtabTask("dtd", "natural", 47),
    "flowers102": VtabTask("oxford_flowers102", "natural", 102),
    "pets": VtabTask("oxford_iiit_pet", "natural", 37),
    "svhn": VtabTask("svhn", "natural", 10),
    "sun397": VtabTask("sun397", "natural", 397),
    "camelyon": VtabTask("patch_camelyon", "specialized", 2),
    "eurosat": VtabTask("eurosat", "specialized", 10),
    "resisc45": VtabTask("resisc45", "specialized", 45),
    "retinopathy": VtabTask("diabetic_retinopathy", "specialized", 5),
    "clevr_count": VtabTask("clevr_count", "structured", 8),
    "clevr_dist": VtabTask("clevr_dist", "structured", 6),
    "dmlab": VtabTask("dmlab", "structured", 6),
    "kitti": VtabTask("kitti", "structured", 4),
    "dsprites_loc": VtabTask("dsprites_loc", "structured", 16),
    "dsprites_ori": VtabTask("dsprites_ori", "structured", 16),
    "smallnorb_azi": VtabTask("smallnorb_azi", "structured", 18),
    "smallnorb_ele": VtabTask("smallnorb_ele", "structured", 9),
}
