"""numpy or torch in, the same kind out: the one helper behind extraction's array functions
that serve both the numpy API and the device stage's tensors."""
from __future__ import annotations

import warnings

import numpy as np
import torch


def as_tensor(x):
    """(x as a tensor — itself, or a numpy array's memory shared — and a function giving a
    result back in x's kind: a tensor as it is, numpy through ``.numpy()``).

    The functions that use this only read their input, so a read-only array (a decoded or
    broadcast one) is shared as it is, not copied; torch's warning about it is silenced."""
    if isinstance(x, torch.Tensor):
        return x, lambda t: t
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(np.ascontiguousarray(x)), lambda t: t.numpy()
