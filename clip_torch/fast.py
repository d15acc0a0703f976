"""A faster CPU inference path for clip_torch models: every nn.Linear through oneDNN.

On CPU, torch runs an fp32 ``nn.Linear`` through MKL's sgemm. On AMD processors MKL does not take
its AVX-512 kernels, and oneDNN's matmul (also in every torch CPU wheel) runs the same product
2-3x faster there (tools/bench_race.py measures both). ``onednn_linears(model)`` returns a copy
of a model whose Linear layers call oneDNN (``torch.ops.mkldnn._linear_pointwise``, the op
torch.compile's inductor uses for CPU linears) on the same weights; the parameter names do not
change, so the copy loads and saves as the original. Inference only (no autograd formula is
promised for that op); ``available()`` says whether this torch build has it.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def available() -> bool:
    """Whether this torch build has oneDNN's linear op (every CPU wheel since 2.1 has)."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


class OneDNNLinear(nn.Linear):
    """nn.Linear (same parameters, same names) whose forward is oneDNN's matmul + bias."""

    def forward(self, x):
        if x.device.type != "cpu" or x.dtype != torch.float32 or torch.is_grad_enabled():
            return super().forward(x)
        return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "none", [], "")


def onednn_linears(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose nn.Linear layers run through oneDNN; it shares ``model``'s parameter
    tensors (no second copy of the weights), and ``model`` itself is left as it is."""
    fast = copy.deepcopy(model, memo={id(p): p for p in model.parameters()})
    for module in fast.modules():
        if type(module) is nn.Linear:
            module.__class__ = OneDNNLinear
    return fast
