"""What recording a CUDA graph needs from autocast; shared by `stateft.decode_graph` and `stateft.train_graph`."""

from __future__ import annotations

import torch


def autocast_for_capture() -> torch.autocast:
    """The current CUDA autocast state (on or off, its dtype) with autocast's cast cache off.

    The cache would keep casts made before a recording, which its replays would then read after they are freed;
    without it the casts are recorded and recomputed in the graph (``make_graphed_callables`` refuses the cache).
    """
    return torch.autocast(
        "cuda", dtype=torch.get_autocast_dtype("cuda"), enabled=torch.is_autocast_enabled("cuda"), cache_enabled=False
    )
