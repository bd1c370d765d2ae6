"""AutoAttack's version for randomized defenses ('rand', Croce & Hein 2020): APGD-CE, then APGD-DLR, with EOT.

The APGD iterations are AutoAttack's own (``pyautoattack.autopgd_base.APGDAttack``, or torchattacks' port as a
fallback), run on our batched EOT wrapper with ``eot_iter=1``: every APGD model call averages ``eot_iter`` draws in
batched passes instead of AutoAttack's Python loop of single-draw passes. Two differences follow and are
deliberate: the loss is taken on the averaged prediction (``eot_reduction="probs"``: the log of the mean class
probabilities, the inference rule being scored) instead of averaging per-draw loss gradients, and APGD's "broken"
check uses that averaged prediction instead of one draw (the source of AutoAttack's optimistic bias on random
models, see auto-attack PR #105). Per image, the highest-loss point is kept where APGD never broke it, and of the
CE and DLR results the one with the larger misclassification margin (averaged over ``eot_iter`` draws) is
returned.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..eot import EOT, eot_predict, margin_loss
from .base import Attack, check_number, confirmed_adversarial, n_classes_of

BACKENDS = ("auto", "pyautoattack", "torchattacks")
APGD_LOSSES = ("ce", "dlr")


def resolve_backend(backend: str) -> str:
    """``pyautoattack`` if importable (for ``auto``), else ``torchattacks``; ImportError if neither is."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown APGD backend {backend!r}; expected one of {BACKENDS}")
    order = ("pyautoattack", "torchattacks") if backend == "auto" else (backend,)
    for name in order:
        try:
            __import__(name)
            return name
        except ImportError:
            continue
    raise ImportError(f"apgd_rand needs {' or '.join(order)} (pip install 'lwta-plugin[robustbench]' or "
                      "'lwta-plugin[attacks]')")


class APGDRand(Attack):
    """APGD-CE + APGD-DLR (L-inf) with EOT over ``eot_iter`` draws, ``n_restarts`` restarts, ``steps`` iterations."""

    name = "apgd_rand"
    white_box, iterative = True, True
    budget_keys = ("steps", "eot_iter", "n_restarts")
    supports_early_exit = True

    def __init__(self, model: nn.Module, *, eps: float = 0.3, steps: int = 100, eot_iter: int = 20,
                 n_restarts: int = 1, losses: tuple[str, ...] | list[str] = APGD_LOSSES, rho: float = 0.75,
                 eot_reduction: str = "probs", chunk_size: int | None = None, backend: str = "auto"):
        check_number("eps", eps, 0.0)

        check_number("steps", steps, 1, integer=True)
        check_number("eot_iter", eot_iter, 1, integer=True)
        check_number("n_restarts", n_restarts, 1, integer=True)
        check_number("rho", rho, 0.0, 1.0, low_open=True)
        losses = tuple(losses)
        if not losses or any(loss not in APGD_LOSSES for loss in losses):
            raise ValueError(f"losses must be a non-empty subset of {APGD_LOSSES}, got {losses}")
        if eot_reduction not in ("logits", "probs"):
            raise ValueError(f"eot_reduction must be 'logits' or 'probs', got {eot_reduction!r}")
        self.backend = resolve_backend(backend)
        super().__init__(model, eps=float(eps), steps=int(steps), eot_iter=int(eot_iter), n_restarts=int(n_restarts),
                         losses=list(losses), rho=float(rho), eot_reduction=eot_reduction, backend=self.backend)
        self.eps, self.steps, self.eot_iter, self.n_restarts = float(eps), int(steps), int(eot_iter), int(n_restarts)
        self.losses, self.rho, self.eot_reduction, self.chunk_size = losses, float(rho), eot_reduction, chunk_size
        self.early_exit, self.confirm_samples = 0, 5

    def _apgd(self, predict: nn.Module, loss: str, x: torch.Tensor) -> Any:
        if self.backend == "pyautoattack":
            from pyautoattack.autopgd_base import APGDAttack

            apgd = APGDAttack(predict, n_iter=self.steps, norm="Linf", n_restarts=1, eps=self.eps, loss=loss,
                              eot_iter=1, rho=self.rho, device=x.device)
            apgd.init_hyperparam(x)
            return apgd
        import torchattacks

        return torchattacks.APGD(predict, norm="Linf", eps=self.eps, steps=self.steps, n_restarts=1, loss=loss,
                                 eot_iter=1, rho=self.rho)

    def _run(self, predict: nn.Module, loss: str, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One APGD loss with restarts on the examples not broken yet; returns points and 'broken' flags."""
        apgd = self._apgd(predict, loss, x)
        out = x.clone()
        broken = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        best_loss = torch.full((x.shape[0],), float("-inf"), device=x.device)
        for _ in range(self.n_restarts):
            idx = (~broken).nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            # APGD's own loop; its random start uses the global torch RNG, which the caller seeds.
            x_best, acc, loss_best, x_best_adv = apgd.attack_single_run(x[idx], y[idx])
            newly = ~acc.bool().to(x.device)
            loss_best = loss_best.to(best_loss.device, best_loss.dtype)
            update = newly | (loss_best > best_loss[idx])
            cand = torch.where(newly.view(-1, *[1] * (x.dim() - 1)), x_best_adv.to(x), x_best.to(x))
            out[idx[update]] = cand[update]
            best_loss[idx[update]] = loss_best[update]
            broken[idx[newly]] = True
        return out, broken

    def perturb(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Each loss in turn; with ``early_exit = k``, a later loss runs only on the images whose earlier result is
        not confirmed adversarial by ``k`` fresh predictions (:func:`confirmed_adversarial`), as AutoAttack runs
        each attack only on the points still robust."""
        predict = EOT(self.model, self.eot_iter, self.chunk_size, reduction=self.eot_reduction, output="logits")
        runs, path_adv = [], torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        todo = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        for loss in self.losses:
            if loss == "dlr" and n_classes_of(self.model, x) < 3:
                continue  # DLR needs three classes
            idx = todo.nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            cand, broken = self._run(predict, loss, x[idx], y[idx])
            runs.append((idx, cand))
            path_adv[idx] |= broken
            if self.early_exit and broken.any():
                b = broken.nonzero().squeeze(1)
                sure = confirmed_adversarial(self.model, cand[b], y[idx[b]], self.early_exit, self.confirm_samples)
                todo[idx[b[sure]]] = False
        out = x.clone()
        best = torch.full((x.shape[0],), float("-inf"), device=x.device)
        for idx, cand in runs:  # of the losses' results, the one with the larger margin (ties: the first)
            m = margin_loss(eot_predict(self.model, cand, self.eot_iter, self.chunk_size), y[idx]).to(best.dtype)
            better = m > best[idx]
            out[idx[better]] = cand[better]
            best[idx[better]] = m[better]
        self.last_info = {"path_adversarial": path_adv.cpu(), "returned_adversarial": (best > 0).cpu()}
        if self.early_exit:
            self.last_info["exited"] = int((~todo).sum())
        return out
