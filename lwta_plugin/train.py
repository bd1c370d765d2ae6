"""Training by maximising the ELBO: data loss + KL / N, two Adam optimisers (weights, IBP variables).

The final checkpoint is the epoch with the best validation accuracy (a split held out from the training set;
the test set is never used for selection). Training resumes from ``<out>.last.pt`` if it exists.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import __version__
from .checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from .data import load_tensors
from .io import sha256_file
from .models import ARCH_DATASETS, LWTANet, create_model, parse_name

NOISE_STD = {"mnist": 0.3, "fashion_mnist": 0.3, "cifar10": 0.032}
FGSM_EPS = {"mnist": 0.3, "fashion_mnist": 0.3, "cifar10": 0.031}  # paper 4.4


@dataclass
class TrainConfig:
    model: str
    dataset: str = "mnist"
    epochs: int = 1
    batch_size: int = 200
    lr: float = 1e-3
    ibp_lr: float = 1e-2
    final_lr_fraction: float = 0.01  # polynomial (power 0.5) decay to this fraction of lr, as the reference
    noise_std: float | None = None  # Gaussian input noise (reference: 0.3 MNIST, 0.032 CIFAR-10)
    fgsm_eps: float = 0.0  # > 0: FGSM adversarial training (paper 4.4), loss = (clean + adversarial) / 2; 0 for an
    # ``_fgsm`` model means the paper's eps (FGSM_EPS)
    val_size: int = 5000
    seed: int = 0
    limit: int | None = None  # use only the first `limit` training images (smoke tests)
    test_limit: int | None = None  # report test accuracy on the first `test_limit` test images (default: all)
    init_from: str | None = None  # continue training the weights of this final checkpoint (same architecture)
    eval_samples: int = 5
    threads: int | None = None
    data_root: str | None = None
    extra: dict = field(default_factory=dict)


def _accuracy(model: LWTANet, x: torch.Tensor, y: torch.Tensor, samples: int, batch: int = 1000) -> float:
    model.eval()
    correct = 0
    with torch.inference_mode(), model.using(samples=samples):  # the model chunks its S-sample passes itself
        for i in range(0, len(x), batch):
            correct += (model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum().item()
    return correct / max(len(x), 1)


def _fgsm(model: LWTANet, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    loss, _ = model.loss(x, y)
    (grad,) = torch.autograd.grad(loss, x)
    return (x + eps * grad.sign()).clamp(0, 1).detach()


def make_optimizers(model: LWTANet, lr: float, ibp_lr: float) -> tuple[torch.optim.Adam, torch.optim.Adam | None]:
    """Adam for the weights and a second Adam, with its own (larger) learning rate, for the IBP parameters."""
    ibp_params = list(model.ibp_parameters())
    opt_w = torch.optim.Adam(model.weight_parameters(), lr=lr)
    return opt_w, (torch.optim.Adam(ibp_params, lr=ibp_lr) if ibp_params else None)


def elbo_step(model: LWTANet, x: torch.Tensor, y: torch.Tensor, opt_w: torch.optim.Optimizer,
              opt_ibp: torch.optim.Optimizer | None, n_train: int, noise: float = 0.0,
              fgsm_eps: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimisation step on the negative ELBO: data loss of the (noise-augmented) batch, averaged with the loss
    on its FGSM images when ``fgsm_eps`` > 0, plus KL / N. Returns the loss and the raw outputs of the batch."""
    xb = x + noise * torch.randn_like(x) if noise else x
    data_loss, raw = model.loss(xb, y)
    if fgsm_eps > 0:
        adv_loss, _ = model.loss(_fgsm(model, x, y, fgsm_eps), y)
        data_loss = 0.5 * (data_loss + adv_loss)
    loss = data_loss + model.kl() / n_train
    for opt in (opt_w, opt_ibp):
        if opt is not None:
            opt.zero_grad(set_to_none=True)
    loss.backward()
    for opt in (opt_w, opt_ibp):
        if opt is not None:
            opt.step()
    return loss, raw


def _lr_factor(step: int, total: int, final: float) -> float:
    return (1 - final) * (1 - min(step, total) / total) ** 0.5 + final


def check_fgsm_variant(cfg: TrainConfig) -> TrainConfig:
    """FGSM adversarial training and the ``_fgsm`` name go together, so that a zoo name says how it was trained."""
    fgsm_name = parse_name(cfg.model, ARCH_DATASETS.get(cfg.dataset, cfg.dataset)).variant == "fgsm"
    if cfg.fgsm_eps < 0:
        raise ValueError(f"fgsm_eps must be >= 0, got {cfg.fgsm_eps}")
    if cfg.fgsm_eps > 0 and not fgsm_name:
        raise ValueError(f"FGSM adversarial training (fgsm_eps={cfg.fgsm_eps}) makes a different model from "
                         f"{cfg.model!r}: name it {cfg.model}_fgsm")
    if fgsm_name and cfg.fgsm_eps == 0:
        return replace(cfg, fgsm_eps=FGSM_EPS[cfg.dataset])
    return cfg


def train(cfg: TrainConfig, out: str | os.PathLike, progress: bool = True) -> dict:
    """Train ``cfg.model`` and write the best-on-validation checkpoint to ``out``; returns its metrics."""
    out = Path(out)
    cfg = check_fgsm_variant(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    x, y = load_tensors(cfg.dataset, "train", root=cfg.data_root, limit=cfg.limit)
    if not 0 < cfg.val_size < len(x):
        raise ValueError(f"val_size must be between 1 and {len(x) - 1}, got {cfg.val_size}")
    # Validation = the last val_size training images (for MNIST: part of the official 10k validation split).
    xtr, ytr, xval, yval = x[:-cfg.val_size], y[:-cfg.val_size], x[-cfg.val_size:], y[-cfg.val_size:]
    xte, yte = load_tensors(cfg.dataset, "test", root=cfg.data_root, limit=cfg.test_limit)
    n_train = len(xtr)
    noise = NOISE_STD.get(cfg.dataset, 0.0) if cfg.noise_std is None else cfg.noise_std

    model = create_model(cfg.model, cfg.dataset)
    parent = None
    if cfg.init_from:
        init, init_meta = load_checkpoint(cfg.init_from, expected_name=cfg.model, expected_dataset=cfg.dataset)
        model.load_state_dict(init.state_dict())
        parent = {"file": str(cfg.init_from), "sha256": sha256_file(cfg.init_from),
                  "train_config": init_meta.get("train_config"), "metrics": init_meta.get("metrics"),
                  "history": init_meta.get("history")}
    opt_w, opt_ibp = make_optimizers(model, cfg.lr, cfg.ibp_lr)
    steps_per_epoch = math.ceil(n_train / cfg.batch_size)
    total_steps = cfg.epochs * steps_per_epoch
    start_epoch, best, history = 0, {"val_acc": -1.0}, []
    last = out.with_suffix(".last.pt")
    gen = torch.Generator().manual_seed(cfg.seed)

    if last.exists():  # resume an interrupted run of the same configuration
        payload = read_checkpoint(last)
        if payload["meta"].get("train_config", {}).get("model") == cfg.model:
            model.load_state_dict(payload["state_dict"])
            ex = payload.get("extra", {})
            opt_w.load_state_dict(ex["opt_w"])
            if opt_ibp is not None:
                opt_ibp.load_state_dict(ex["opt_ibp"])
            gen.set_state(ex["generator"])
            torch.set_rng_state(ex["torch_rng"])
            start_epoch, best, history = payload["meta"]["epoch"], payload["meta"]["best"], payload["meta"]["history"]
            print(f"resuming {cfg.model} from epoch {start_epoch} ({last})")

    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        t0 = time.time()
        perm = torch.randperm(n_train, generator=gen)
        bar = tqdm(range(steps_per_epoch), desc=f"{cfg.model} epoch {epoch + 1}/{cfg.epochs}",
                   disable=not progress, mininterval=2.0)
        run_loss = run_acc = 0.0
        for i in bar:
            step = epoch * steps_per_epoch + i
            f = _lr_factor(step, total_steps, cfg.final_lr_fraction)
            for opt, lr in ((opt_w, cfg.lr), (opt_ibp, cfg.ibp_lr)):
                if opt is not None:
                    for g in opt.param_groups:
                        g["lr"] = lr * f
            idx = perm[i * cfg.batch_size:(i + 1) * cfg.batch_size]
            yb = ytr[idx]
            loss, raw = elbo_step(model, xtr[idx], yb, opt_w, opt_ibp, n_train, noise, cfg.fgsm_eps)
            with torch.no_grad():
                acc = (model.decoder(raw).argmax(1) == yb).float().mean().item()
            run_loss = 0.98 * run_loss + 0.02 * loss.item() if i else loss.item()
            run_acc = 0.98 * run_acc + 0.02 * acc if i else acc
            bar.set_postfix(loss=f"{run_loss:.4f}", acc=f"{run_acc:.4f}", refresh=False)
        epoch_time = time.time() - t0
        val_acc = _accuracy(model, xval, yval, samples=1)
        record = {"epoch": epoch + 1, "train_loss": run_loss, "train_acc": run_acc, "val_acc": val_acc,
                  "epoch_seconds": round(epoch_time, 1)}
        history.append(record)
        print(json.dumps(record))
        meta_common = {"train_config": asdict(cfg), "plugin_version": __version__, "torch": str(torch.__version__),
                       "n_train": n_train, "n_val": len(xval)}
        if val_acc > best["val_acc"]:
            best = dict(record)
            save_checkpoint(out.with_suffix(".best.pt"), model, {**meta_common, "epoch": epoch + 1})
        save_checkpoint(last, model, {**meta_common, "epoch": epoch + 1, "best": best, "history": history},
                        extra={"opt_w": opt_w.state_dict(),
                               "opt_ibp": opt_ibp.state_dict() if opt_ibp else {},
                               "generator": gen.get_state(), "torch_rng": torch.get_rng_state()})

    model, _ = load_checkpoint(out.with_suffix(".best.pt"))
    torch.manual_seed(cfg.seed + 1)
    test_acc_1 = _accuracy(model, xte, yte, samples=1)
    test_acc_s = _accuracy(model, xte, yte, samples=cfg.eval_samples)
    metrics = {"best_epoch": best["epoch"], "val_acc": best["val_acc"], "test_acc_1pass": test_acc_1,
               f"test_acc_{cfg.eval_samples}samples": test_acc_s, "n_test": len(xte),
               "epoch_seconds": [h["epoch_seconds"] for h in history]}
    meta = {"name": cfg.model, "dataset": cfg.dataset, "epoch": best["epoch"], "metrics": metrics,
            "train_config": asdict(cfg), "history": history, "plugin_version": __version__,
            "torch": str(torch.__version__), "n_train": n_train, "n_val": len(xval)}
    if parent is not None:
        meta["parent"] = parent  # the checkpoint this run continued (its own command, epochs and metrics)
    sha = save_checkpoint(out, model, meta)
    out.with_suffix(".best.pt").unlink(missing_ok=True)
    last.unlink(missing_ok=True)
    print(json.dumps({"model": cfg.model, "checkpoint": str(out), "sha256": sha, **metrics}))
    return {**metrics, "sha256": sha}
