"""Two bases: the reasoner's task vector taken over its own base and set onto the VLM's.

DeepSeek-R1-Distill-Qwen-7B descends from Qwen2.5-Math-7B while Qwen2.5-VL-7B descends from
Qwen2.5-7B; τ_R = θ_R − θ_0 against the VLM's base would count Qwen2.5-Math's continued
pretraining as reasoning. With ``--reasoner-base``, τ_R = θ_R − θ_0R and the merged block is
θ_0 + λ_V τ_V + λ_R τ_R. Every task-vector method then runs unchanged on a reasoner read as
θ_0 + τ_R (computed per chunk in float32), so statistics, FRANK's coefficients, TIES and DARE
all see the right τ_R without a second copy of the merge code.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from frankmerge.casting import as_float32
from frankmerge.checkpoints.dtypes import F32, to_torch
from frankmerge.checkpoints.reader import TensorInfo

if TYPE_CHECKING:
    import torch

    from frankmerge.inputs import RoleInput


class TransplantedReasoner:
    """Reads, for each tensor of one decoder block of the reasoner, θ_R − θ_0R + θ_0 (float32).

    Duck-types the part of ``Checkpoint`` that streaming uses (``info``, ``read_array``,
    ``release``; ``read_chunk`` for torch's callers); tensors are named by the reasoner's own names.
    """

    def __init__(self, reasoner: RoleInput, reasoner_base: RoleInput, base: RoleInput, index: int) -> None:
        self._reasoner, self._reasoner_base, self._base = reasoner.checkpoint, reasoner_base.checkpoint, base.checkpoint
        self._names = {
            name: (reasoner_base.layout.blocks[index][suffix], base.layout.blocks[index][suffix])
            for suffix, name in reasoner.layout.blocks[index].items()
        }

    def info(self, name: str) -> TensorInfo:
        return replace(self._reasoner.info(name), dtype=F32)

    def read_array(self, name: str, start: int, count: int) -> np.ndarray[Any, Any]:
        """θ_R − θ_0R + θ_0 over ``[start, start+count)``, each term widened to float32 first."""
        own_base, base = self._names[name]
        values = as_float32(self._reasoner.read_array(name, start, count), self._reasoner.info(name).dtype)
        values -= as_float32(self._reasoner_base.read_array(own_base, start, count), self._reasoner_base.info(own_base).dtype)
        values += as_float32(self._base.read_array(base, start, count), self._base.info(base).dtype)
        return values

    def read_chunk(self, name: str, start: int, count: int) -> torch.Tensor:
        return to_torch(self.read_array(name, start, count), F32)

    def release(self, name: str, start: int, count: int) -> None:
        own_base, base = self._names[name]
        self._reasoner.release(name, start, count)
        self._reasoner_base.release(own_base, start, count)
        self._base.release(base, start, count)


def reasoner_reader(inputs: dict[str, RoleInput], index: int) -> object:
    """What block ``index``'s loops read the reasoner through: its checkpoint, or the transplant."""
    if "reasoner_base" not in inputs:
        return inputs["reasoner"].checkpoint
    return TransplantedReasoner(inputs["reasoner"], inputs["reasoner_base"], inputs["base"], index)
