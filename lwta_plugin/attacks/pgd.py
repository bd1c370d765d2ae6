"""L-inf PGD (Madry et al. 2018) on an EOT gradient; the engine of the gradient attacks of this package.

With the defaults (``eot_samples=1``) every gradient uses one stochastic forward pass, as the paper's attack
(cleverhans PGD on the stochastic test branch). ``eot_samples > 1`` averages the loss gradient over that many
independent draws in batched passes (:func:`lwta_plugin.eot.eot_gradient`).

The returned point is the best iterate (:class:`~lwta_plugin.attacks.base.BestIterate`): every point of the path
is judged by the averaged prediction of the draws used for its gradient (plus one final evaluation of the last
iterate), and the point with the largest misclassification margin is returned. With one draw per gradient (the
paper's PGD on a random model) that judgement is itself one noisy draw; the evaluation re-scores the returned
point with averaged predictions anyway.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..eot import LOSSES, eot_gradient, eot_predict
from .base import Attack, BestIterate, check_number, project_linf


class PGD(Attack):
    """L-inf PGD: ``steps`` sign-gradient steps of size ``alpha`` from a uniform random start in the eps-ball.

    loss: ``ce`` (cross-entropy) or ``margin`` (CW margin ``max_{j != y} z_j - z_y``), on the decoder output
    ``output`` (``logits``; ``raw`` = codeword correlations before tanh and the log-ReLU). eot_samples: draws of
    the model's randomness per gradient. alpha defaults to ``2.5 * eps / steps``. on_step: optional callback,
    called with every point of the attack path (the start, then the point after each step: ``steps + 1`` calls)
    inside the attack's context, e.g. to record a trajectory; it is not a hyperparameter. A callback that draws
    random numbers shifts the attack's later draws; without one the attack is unchanged.
    """

    name = "pgd"
    white_box, iterative = True, True
    budget_keys = ("steps", "eot_samples")

    def __init__(self, model: nn.Module, *, eps: float = 0.3, alpha: float | None = None, steps: int = 40,
                 random_start: bool = True, loss: str = "ce", eot_samples: int = 1, output: str = "logits",
                 chunk_size: int | None = None, on_step: Callable[[torch.Tensor], None] | None = None):
        check_number("eps", eps, 0.0)
        check_number("steps", steps, 1, integer=True)
        alpha = 2.5 * eps / steps if alpha is None else alpha
        check_number("alpha", alpha, 0.0)
        check_number("eot_samples", eot_samples, 1, integer=True)
        if chunk_size is not None:
            check_number("chunk_size", chunk_size, 1, integer=True)
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; expected one of {sorted(LOSSES)}")
        if output not in ("logits", "correlations", "raw"):
            raise ValueError(f"unknown output {output!r}; expected logits, correlations or raw")
        super().__init__(model, eps=float(eps), alpha=float(alpha), steps=int(steps),
                         random_start=bool(random_start), loss=loss, eot_samples=int(eot_samples), output=output)
        self.eps, self.alpha, self.steps, self.random_start = float(eps), float(alpha), int(steps), bool(random_start)
        self.loss, self.eot_samples, self.output, self.chunk_size = loss, int(eot_samples), output, chunk_size
        self.on_step = on_step

    # hooks for the variants -------------------------------------------------------------------------------------
    def target(self) -> nn.Module:
        """The model whose gradients drive the attack (a surrogate for transfer attacks)."""
        return self.model

    def context(self) -> contextlib.AbstractContextManager[Any]:
        """Context in which gradients are computed (e.g. a sampling mode of an LWTANet)."""
        return contextlib.nullcontext()

    # ------------------------------------------------------------------------------------------------------------
    def perturb(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        model = self.target()
        x_adv = x.clone()
        if self.random_start:
            x_adv = project_linf(x_adv + torch.empty_like(x).uniform_(-self.eps, self.eps), x, self.eps)
        best = BestIterate(x, y)
        trace = []
        with self.context():
            for _ in range(self.steps):
                if self.on_step is not None:
                    self.on_step(x_adv)
                g = eot_gradient(model, x_adv, y, self.loss, self.eot_samples, self.chunk_size, self.output)
                best.update(x_adv, g.log_probs)
                trace.append(g.loss)
                x_adv = project_linf(x_adv + self.alpha * g.grad.sign(), x, self.eps)
            if self.on_step is not None:
                self.on_step(x_adv)
            best.update(x_adv, eot_predict(model, x_adv, self.eot_samples, self.chunk_size).clone())
        self.last_info = {"path_adversarial": best.ever_adversarial.cpu(), "returned_adversarial": best.adversarial.cpu(),
                          "loss_trace": torch.stack(trace).cpu()}
        return best.x
