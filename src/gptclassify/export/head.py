"""The run's head as transformers' bias-free `score` layer: the calibration temperature and a
regression's target scale folded into its weights, and GPT-2's bias folded into the final
LayerNorm's shift, so that the exported network's outputs are the run's calibrated scores.

With `W` the head's weights and `b` its bias, `score(ln_f(x)) = W (g*x̂ + β) + b`. Shifting β by a
`δ` with `W δ = b` (the least-norm one, `W^T (W W^T)^-1 b`) moves the bias inside: exact whenever
W's rows are independent, which a trained head's are; a head whose rows are not is refused.
RMSNorm (the Llama family) has no shift: those heads are trained without a bias.
"""

from __future__ import annotations

import torch

from ..config import RunConfig
from ..errors import UserError


def scores_head(state: dict, config: RunConfig) -> tuple[torch.Tensor, torch.Tensor | None, str | None]:
    """(weight, bias, difference): the head with calibration and the target's units folded in;
    `difference` says what the weights cannot hold (a Llama-family regression's target mean)."""
    weight = state["out_head.weight"].double()
    bias = state["out_head.bias"].double() if "out_head.bias" in state else None
    if config.temperature is not None:  # logits / T, per label for multi-label
        t = torch.as_tensor(config.temperature, dtype=torch.float64).reshape(-1, 1)
        weight = weight / t
        bias = bias / t[:, 0] if bias is not None else None
    difference = None
    if config.task == "regression" and config.target_scale:
        mean, std = config.target_scale
        weight = weight * std
        bias = bias * std + mean if bias is not None else None
        if bias is None and mean:
            difference = (f"the output is the value minus the training targets' mean: add {mean:.6g} "
                          "(transformers' score layer has no bias to hold it)")
    return weight, bias, difference


def fold_bias_into_shift(weight: torch.Tensor, bias: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """The final LayerNorm's shift β + δ with `weight @ δ = bias` (see the module's docstring)."""
    gram = weight @ weight.T
    if torch.linalg.matrix_rank(gram) < gram.shape[0]:
        raise UserError("the head's rows are linearly dependent: its bias cannot be folded into the final norm")
    delta = weight.T @ torch.linalg.solve(gram, bias)
    return (shift.double() + delta).float()
