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

``backend="native"`` runs the same iterations in this module (:func:`apgd_linf`: a line-for-line port of
pyautoattack's L-inf ``attack_single_run``, tested to return the same points from the same random state), which
adds the early exit inside the loop: with ``early_exit = k``, an image whose iterate is misclassified by the step's
averaged prediction and by all of ``k`` fresh predictions keeps that point and leaves the batch, so the gradient
evaluations shrink with the robust images (AutoAttack only drops broken images between its attacks); after a
failed check an image waits 1, 2, 4, ... steps before its next one (:class:`~lwta_plugin.attacks.base.ExitBackoff`).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..eot import EOT, eot_predict, margin_loss
from .base import Attack, ExitBackoff, check_number, confirmed_adversarial, n_classes_of

BACKENDS = ("auto", "native", "pyautoattack", "torchattacks")
APGD_LOSSES = ("ce", "dlr")


def resolve_backend(backend: str) -> str:
    """``pyautoattack`` if importable (for ``auto``), else ``torchattacks``; ImportError if neither is.
    ``native`` (this module's port) needs neither."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown APGD backend {backend!r}; expected one of {BACKENDS}")
    if backend == "native":
        return backend
    order = ("pyautoattack", "torchattacks") if backend == "auto" else (backend,)
    for name in order:
        try:
            __import__(name)
            return name
        except ImportError:
            continue
    raise ImportError(f"apgd_rand needs {' or '.join(order)} (pip install 'lwta-plugin[robustbench]' or "
                      "'lwta-plugin[attacks]')")


def dlr_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Croce & Hein's difference-of-logits-ratio loss, per example (pyautoattack's formula)."""
    x_sorted, ind_sorted = logits.sort(dim=1)
    ind = (ind_sorted[:, -1] == y).float()
    u = torch.arange(logits.shape[0], device=logits.device)
    return -(logits[u, y] - x_sorted[:, -2] * ind - x_sorted[:, -1] * (1.0 - ind)) / (
        x_sorted[:, -1] - x_sorted[:, -3] + 1e-12)


def _oscillation(loss_steps: torch.Tensor, j: int, k: int, rho: float) -> torch.Tensor:
    t = torch.zeros(loss_steps.shape[1], device=loss_steps.device)
    for c in range(k):  # j - c - 1 may be -1 at the first checkpoint: the last row, as in pyautoattack
        t += (loss_steps[j - c] > loss_steps[j - c - 1]).float()
    return (t <= k * rho * torch.ones_like(t)).float()


def apgd_linf(predict: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, steps: int, loss: str,
              rho: float = 0.75, exit_check: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor] | None = None
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One run of APGD (L-inf) from a random start: pyautoattack's ``attack_single_run`` on the active images.

    Returns ``(x_best, robust, loss_best, x_best_adv)`` as pyautoattack does. ``exit_check(x_t, rows, step)``, called
    after each step with the misclassified iterates and their rows, returns which of them leave the batch (their
    iterate is kept as ``x_best_adv``); without it every image runs every step and the result is pyautoattack's.
    """
    n, view = x.shape[0], (-1, *[1] * (x.dim() - 1))
    n_iter_2, n_iter_min, size_decr = max(int(0.22 * steps), 1), max(int(0.06 * steps), 1), max(int(0.03 * steps), 1)
    criterion = (lambda z, t: F.cross_entropy(z, t, reduction="none")) if loss == "ce" else dlr_loss
    t = 2 * torch.rand(x.shape).to(x.device).detach() - 1  # the random start draws as pyautoattack's does
    x_adv = (x + eps * torch.ones_like(x) * (t / (t.abs().view(n, -1).max(1)[0].view(view) + 1e-12))).clamp(0.0, 1.0)
    x_best, x_best_adv = x_adv.clone(), x_adv.clone()
    loss_steps = torch.zeros(steps, n, device=x.device)

    def value_and_grad(xa: torch.Tensor, ya: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        xa = xa.detach().requires_grad_()
        with torch.enable_grad():
            logits = predict(xa)
            loss_indiv = criterion(logits, ya)
            grad = torch.autograd.grad(loss_indiv.sum(), [xa])[0].detach()
        return logits.detach(), loss_indiv.detach(), grad

    logits, loss_best, grad = value_and_grad(x_adv, y)
    grad_best = grad.clone()
    robust = logits.max(1)[1] == y
    step_size = 2.0 * eps * torch.ones([n, *[1] * (x.dim() - 1)], device=x.device)
    x_adv_old = x_adv.clone()
    k, counter = n_iter_2, 0
    loss_best_last_check, reduced_last_check = loss_best.clone(), torch.ones_like(loss_best)
    active = torch.arange(n, device=x.device)
    for i in range(steps):
        if active.numel() == 0:
            break
        with torch.no_grad():
            xa, x0 = x_adv[active], x[active]
            grad2 = xa - x_adv_old[active]
            x_adv_old[active] = xa
            a = 0.75 if i > 0 else 1.0
            x1 = torch.clamp(torch.min(torch.max(xa + step_size[active] * torch.sign(grad[active]), x0 - eps),
                                       x0 + eps), 0.0, 1.0)
            x1 = torch.clamp(torch.min(torch.max(xa + (x1 - xa) * a + grad2 * (1 - a), x0 - eps), x0 + eps), 0.0, 1.0)
        logits, y1, g = value_and_grad(x1, y[active])
        with torch.no_grad():
            x_adv[active], grad[active] = x1, g
            pred = logits.max(1)[1] == y[active]
            robust[active] = robust[active] & pred
            x_best_adv[active[~pred]] = x1[~pred]
            loss_steps[i, active] = y1
            better = y1 > loss_best[active]
            rows = active[better]
            x_best[rows], grad_best[rows], loss_best[rows] = x1[better], g[better], y1[better]
            counter += 1
            if counter == k:  # the step-size checkpoint (over every image: the exited ones are never read again)
                fl = _oscillation(loss_steps, i, k, rho)
                fl = torch.max(fl, (1.0 - reduced_last_check) * (loss_best_last_check >= loss_best).float())
                reduced_last_check, loss_best_last_check = fl.clone(), loss_best.clone()
                half = fl > 0
                step_size[half] /= 2.0
                x_adv[half], grad[half] = x_best[half].clone(), grad_best[half].clone()
                k, counter = max(k - size_decr, n_iter_min), 0
            if exit_check is not None and (~pred).any():
                wrong = (~pred).nonzero().squeeze(1)
                leave = exit_check(x1[wrong], active[wrong], i)
                if leave.any():
                    keep = torch.ones(active.numel(), dtype=torch.bool, device=x.device)
                    keep[wrong[leave]] = False
                    active = active[keep]
    return x_best, robust, loss_best, x_best_adv


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

    def _run(self, predict: nn.Module, loss: str, x: torch.Tensor, y: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One APGD loss with restarts on the examples not broken yet; returns points, 'broken' flags and which
        examples the native loop's early exit already confirmed adversarial."""
        apgd = None if self.backend == "native" else self._apgd(predict, loss, x)
        out = x.clone()
        broken = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        best_loss = torch.full((x.shape[0],), float("-inf"), device=x.device)
        confirmed = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        for _ in range(self.n_restarts):
            idx = (~broken).nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            # APGD's own loop; its random start uses the global torch RNG, which the caller seeds.
            if apgd is None:
                x_best, acc, loss_best, x_best_adv = apgd_linf(
                    predict, x[idx], y[idx], eps=self.eps, steps=self.steps, loss=loss, rho=self.rho,
                    exit_check=self._exit_check(y[idx], confirmed, idx) if self.early_exit else None)
            else:
                x_best, acc, loss_best, x_best_adv = apgd.attack_single_run(x[idx], y[idx])
            newly = ~acc.bool().to(x.device)
            loss_best = loss_best.to(best_loss.device, best_loss.dtype)
            update = newly | (loss_best > best_loss[idx])
            cand = torch.where(newly.view(-1, *[1] * (x.dim() - 1)), x_best_adv.to(x), x_best.to(x))
            out[idx[update]] = cand[update]
            best_loss[idx[update]] = loss_best[update]
            broken[idx[newly]] = True
        return out, broken, confirmed

    def _exit_check(self, y: torch.Tensor, confirmed: torch.Tensor, idx: torch.Tensor
                    ) -> Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]:
        """The native loop's exit: confirm the misclassified iterates (rows of ``y``; tried as an
        :class:`ExitBackoff` allows) and mark them in ``confirmed`` (indexed by ``idx[row]``), so that they are not
        confirmed a second time between losses."""
        backoff = ExitBackoff(y.shape[0], y.device)

        def check(x_t: torch.Tensor, rows: torch.Tensor, step: int) -> torch.Tensor:
            leave = backoff.confirm(self.model, x_t, y[rows], rows, step, self.early_exit, self.confirm_samples)
            confirmed[idx[rows[leave]]] = True
            return leave
        return check

    def perturb(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Each loss in turn; with ``early_exit = k``, a later loss runs only on the images whose earlier result is
        not confirmed adversarial by ``k`` fresh predictions (:func:`confirmed_adversarial`), as AutoAttack runs
        each attack only on the points still robust."""
        predict = EOT(self.model, self.eot_iter, self.chunk_size, reduction=self.eot_reduction, output="logits")
        exited_in_loop = 0
        runs, path_adv = [], torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        todo = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        for loss in self.losses:
            if loss == "dlr" and n_classes_of(self.model, x) < 3:
                continue  # DLR needs three classes
            idx = todo.nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            cand, broken, confirmed = self._run(predict, loss, x[idx], y[idx])
            exited_in_loop += int(confirmed.sum())
            runs.append((idx, cand))
            path_adv[idx] |= broken
            if self.early_exit and broken.any():
                b = (broken & ~confirmed).nonzero().squeeze(1)
                sure = confirmed_adversarial(self.model, cand[b], y[idx[b]], self.early_exit, self.confirm_samples)
                todo[idx[b[sure]]] = False
                todo[idx[confirmed]] = False
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
            if self.backend == "native":
                self.last_info["exited_in_loop"] = exited_in_loop
        return out
