"""torchattacks' PGD: the attack of the authors' evaluation (protocols ``paper-literal`` and ``ladder``).

The reference code ran cleverhans' ``ProjectedGradientDescent``: a uniform random start in the eps-ball, ``steps``
sign-gradient steps of size ``alpha`` on the cross-entropy of the model's logits, projection onto the ball and
[0, 1], and the **last** iterate returned. ``torchattacks.PGD`` does exactly that; with the defaults this class
runs it unchanged. Every model call is one forward pass of whatever the model is: with an LWTANet at
``model.samples = 1`` (as the runner sets it) each gradient sees one fresh draw of the model's randomness, as in
the reference code.

Two options change one thing each, for the rungs of the ladder, on the same torchattacks trajectory:

* ``best_iterate=True`` returns, per image, the point of the path with the largest misclassification margin (as
  :class:`~lwta_plugin.attacks.base.BestIterate` judges it from the model outputs torchattacks computed at that
  point, plus one evaluation of the last iterate) instead of the last iterate;
* ``eot_samples=n`` attacks :class:`~lwta_plugin.eot.EOT` ``(model, n, reduction="probs")``: every gradient is that
  of the cross-entropy of the prediction averaged over ``n`` draws (the model's inference rule), in batched passes.
"""
from __future__ import annotations

import torch
from torch import nn

from ..eot import EOT
from .base import Attack, BestIterate, check_number


class _PathRecorder(nn.Module):
    """Passes calls through to ``model`` and lets ``best`` judge every full-batch point torchattacks evaluates."""

    def __init__(self, model: nn.Module, best: BestIterate):
        super().__init__()
        self.model, self.best = model, best

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        if x.shape[0] == self.best.x.shape[0]:
            self.best.update(x, torch.log_softmax(out.detach(), 1))
        return out


class TorchattacksPGD(Attack):
    """``torchattacks.PGD(model, eps, alpha, steps, random_start)``: L-inf PGD returning the last iterate (or,
    with ``best_iterate``, the best point of the same path; with ``eot_samples``, on the EOT-averaged model)."""

    name = "torchattacks_pgd"
    white_box, iterative = True, True
    budget_keys = ("steps", "eot_samples")
    supports_targeted = True  # torchattacks.PGD's targeted mode, on the target labels

    def __init__(self, model: nn.Module, *, eps: float = 0.3, alpha: float | None = None, steps: int = 40,
                 random_start: bool = True, best_iterate: bool = False, eot_samples: int = 1):
        check_number("eps", eps, 0.0)
        check_number("steps", steps, 1, integer=True)
        alpha = 2.5 * eps / steps if alpha is None else alpha
        check_number("alpha", alpha, 0.0)
        check_number("eot_samples", eot_samples, 1, integer=True)
        super().__init__(model, eps=float(eps), alpha=float(alpha), steps=int(steps), random_start=bool(random_start),
                         best_iterate=bool(best_iterate), eot_samples=int(eot_samples))

    def perturb(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        try:
            import torchattacks  # optional dependency: lwta-plugin[attacks]
        except ImportError:
            raise ImportError("torchattacks_pgd needs torchattacks: pip install 'lwta-plugin[attacks]'") from None
        hp = self.hparams
        target = self.model if hp["eot_samples"] == 1 else EOT(self.model, hp["eot_samples"], reduction="probs")
        best = BestIterate(x, y, self.targeted)
        attacked = _PathRecorder(target, best) if hp["best_iterate"] else target
        attack = torchattacks.PGD(attacked, eps=hp["eps"], alpha=hp["alpha"], steps=hp["steps"],
                                  random_start=hp["random_start"])
        if self.targeted:
            attack.set_mode_targeted_by_label(quiet=True)  # y holds the targets already
        x_last = attack(x, y)
        if not hp["best_iterate"]:
            return x_last
        with torch.no_grad():
            attacked(x_last)  # the last iterate is judged too
        self.last_info = {"path_adversarial": best.ever_adversarial.cpu(),
                          "returned_adversarial": best.adversarial.cpu()}
        return best.x
