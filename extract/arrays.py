"""numpy or torch in, the same kind out: the one helper behind extraction's array functions
that serve both the numpy API and the device stage's tensors."""
from __future__ import annotations

import numpy as np
import torch


def as_tensor(x):
    """(x as a tensor — itself, or a numpy array's memory shared — and a function giving a
    result back in x's kind: a tensor as it is, numpy through ``.numpy()``)."""
    if isinstance(x, torch.Tensor):
        return x, lambda t: t
    return torch.from_numpy(np.ascontiguousarray(x)), lambda t: t.numpy()
