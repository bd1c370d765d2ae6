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
from .base import Attack, BestIterate, ExitBackoff, check_number, project_linf


class PGD(Attack):
    """L-inf PGD: ``steps`` sign-gradient steps of size ``alpha`` from a uniform random start in the eps-ball.

    loss: ``ce`` (cross-entropy) or ``margin`` (CW margin ``max_{j != y} z_j - z_y``), on the decoder output
    ``output`` (``logits``; ``raw`` = codeword correlations before tanh and the log-ReLU). eot_samples: draws of
    the model's randomness per gradient. alpha defaults to ``2.5 * eps / steps``. on_step: optional callback,
    called with every point of the attack path (the start, then the point after each step: ``steps + 1`` calls)
    inside the attack's context, e.g. to record a trajectory; it is not a hyperparameter. A callback that draws
    random numbers shifts the attack's later draws; without one the attack is unchanged.

    Early exit (:meth:`set_early_exit` ``(k)``, or ``early_exit=k`` to :func:`~lwta_plugin.attacks.build_attack`): after each step, an image whose point was misclassified by the step's averaged
    prediction is checked with ``k`` fresh predictions of ``confirm_samples`` draws each
    (:func:`~lwta_plugin.attacks.base.confirmed_adversarial`); if all are wrong, that point is returned and the
    image costs no more gradients (the batch shrinks as the attack goes; ``on_step`` then sees fewer steps). An
    image whose check failed waits 1, 2, 4, ... steps before its next check (:class:`~lwta_plugin.attacks.base.ExitBackoff`).
    """

    supports_early_exit = True  # not transfer: its steps judge the surrogate (Transfer sets it False)
    supports_targeted = True  # targeted: descends the loss of the target labels (set_mode_targeted_*)

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
        self.early_exit, self.confirm_samples = 0, 5

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
        best = BestIterate(x, y, self.targeted)
        sign = -1.0 if self.targeted else 1.0  # targeted: y are the targets, and their loss is minimised
        active = torch.arange(x.shape[0], device=x.device)  # images still attacked (early exit removes some)
        trace = []
        backoff = ExitBackoff(x.shape[0], x.device)
        for step in range(self.steps):
            if active.numel() == 0:
                break
            with self.context():
                if self.on_step is not None:
                    self.on_step(x_adv)
                xa, ya = x_adv[active], y[active]
                g = eot_gradient(model, xa, ya, self.loss, self.eot_samples, self.chunk_size, self.output)
            best.update(xa, g.log_probs, active)
            step_loss = torch.full((x.shape[0],), float("nan"), dtype=g.loss.dtype, device=g.loss.device)
            step_loss[active] = sign * g.loss  # the objective the attack ascends
            trace.append(step_loss)
            x_adv[active] = project_linf(xa + self.alpha * (sign * g.grad).sign(), x[active], self.eps)
            if self.early_exit:
                active = self._exit(best, active, xa, ya, g.log_probs, backoff, step)
        if active.numel():
            with self.context():
                if self.on_step is not None:
                    self.on_step(x_adv)
                best.update(x_adv[active], eot_predict(model, x_adv[active], self.eot_samples,
                                                       self.chunk_size).clone(), active)
        self.last_info = {"path_adversarial": best.ever_adversarial.cpu(), "returned_adversarial": best.adversarial.cpu(),
                          "loss_trace": torch.stack(trace).cpu() if trace else torch.empty(0, x.shape[0])}
        if self.early_exit:
            self.last_info["exited"] = int(x.shape[0] - active.numel())
        return best.x

    def _exit(self, best: BestIterate, active: torch.Tensor, xa: torch.Tensor, ya: torch.Tensor,
              log_probs: torch.Tensor, backoff: ExitBackoff, step: int) -> torch.Tensor:
        """Early exit: the active images whose point ``xa`` is confirmed adversarial on the attacked model get that
        point as their result and leave (tried as ``backoff`` allows); returns the images still attacked."""
        pred = log_probs.argmax(1)
        cand = (pred == ya if self.targeted else pred != ya).nonzero().squeeze(1)
        if cand.numel() == 0:
            return active
        done = torch.zeros(active.numel(), dtype=torch.bool, device=active.device)
        done[cand] = backoff.confirm(self.model, xa[cand], ya[cand], active[cand], step, self.early_exit,
                                     self.confirm_samples, self.targeted)
        rows = active[done]
        best.x[rows] = xa[done].detach()
        best.margin[rows] = torch.clamp(best.margin[rows], min=torch.finfo(best.margin.dtype).tiny)
        best.ever_adversarial[rows] = True
        return active[~done]
