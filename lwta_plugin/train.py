"""Training by maximising the ELBO: data loss + KL / N, two Adam optimisers (weights, IBP variables).

The final checkpoint is the epoch with the best validation accuracy (a split held out from the training set;
the test set is never used for selection). Training resumes from ``<out>.last.pt`` if it exists and was run with
the same settings (:data:`RESUME_SETTINGS`); otherwise it stops and says how to continue or start over.
Command: ``lwta train`` (:func:`add_parser`).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ._version import __version__
from .checkpoint import load_checkpoint, load_state, read_checkpoint, save_checkpoint
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
    keep_epochs: tuple[int, ...] = ()  # also keep the weights after these epochs (<out stem>.epochNNN.pt)
    extra: dict = field(default_factory=dict)


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check_train_config(cfg: TrainConfig) -> None:
    """Raise ValueError, naming the setting, unless every training setting is usable (before any work)."""
    checks = {
        "epochs": _is_int(cfg.epochs) and cfg.epochs >= 1,
        "batch_size": _is_int(cfg.batch_size) and cfg.batch_size >= 1,
        "lr": _is_number(cfg.lr) and cfg.lr > 0,
        "ibp_lr": _is_number(cfg.ibp_lr) and cfg.ibp_lr > 0,
        "final_lr_fraction": _is_number(cfg.final_lr_fraction) and 0 <= cfg.final_lr_fraction <= 1,
        "noise_std": cfg.noise_std is None or (_is_number(cfg.noise_std) and cfg.noise_std >= 0),
        "fgsm_eps": _is_number(cfg.fgsm_eps) and cfg.fgsm_eps >= 0,
        "val_size": _is_int(cfg.val_size) and cfg.val_size >= 1,
        "seed": _is_int(cfg.seed) and 0 <= cfg.seed < 2**63,
        "limit": cfg.limit is None or (_is_int(cfg.limit) and cfg.limit >= 2),
        "test_limit": cfg.test_limit is None or (_is_int(cfg.test_limit) and cfg.test_limit >= 1),
        "eval_samples": _is_int(cfg.eval_samples) and cfg.eval_samples >= 1,
        "threads": cfg.threads is None or (_is_int(cfg.threads) and cfg.threads >= 1),
    }
    wanted = {"epochs": "an integer >= 1", "batch_size": "an integer >= 1", "lr": "a finite number > 0",
              "ibp_lr": "a finite number > 0", "final_lr_fraction": "a number in [0, 1]",
              "noise_std": "a finite number >= 0 (or unset)", "fgsm_eps": "a finite number >= 0",
              "val_size": "an integer >= 1", "seed": "an integer in [0, 2**63)",
              "limit": "an integer >= 2 (or unset)", "test_limit": "an integer >= 1 (or unset)",
              "eval_samples": "an integer >= 1", "threads": "an integer >= 1 (or unset)"}
    for name, ok in checks.items():
        if not ok:
            raise ValueError(f"training setting {name} must be {wanted[name]}, got {getattr(cfg, name)!r}")
    late = [e for e in cfg.keep_epochs if not _is_int(e) or not 1 <= e <= cfg.epochs]
    if late:
        raise ValueError(f"keep_epochs must be epochs between 1 and {cfg.epochs} (the run's epochs), got {late}")


def check_finite_weights(model: LWTANet, where: str) -> None:
    """Raise ValueError if training made a weight NaN or infinite (a diverged run is never saved)."""
    bad = [k for k, t in model.state_dict().items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise ValueError(f"training diverged {where}: {len(bad)} weight tensor(s) hold NaN or Inf (e.g. {bad[0]}); "
                         "nothing of this epoch was saved. Start over with a smaller --lr / --ibp-lr (delete the "
                         "run's .last.pt first if there is one)")


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
    on its FGSM images when ``fgsm_eps`` > 0, plus the weighted KL (:meth:`LWTANet.kl_weight`: KL / N). Returns the loss and the raw outputs of the batch."""
    xb = x + noise * torch.randn_like(x) if noise else x
    data_loss, raw = model.loss(xb, y)
    if fgsm_eps > 0:
        adv_loss, _ = model.loss(_fgsm(model, x, y, fgsm_eps), y)
        data_loss = 0.5 * (data_loss + adv_loss)
    loss = data_loss + model.kl() * model.kl_weight(n_train, len(x))
    for opt in (opt_w, opt_ibp):
        if opt is not None:
            opt.zero_grad(set_to_none=True)
    loss.backward()
    for opt in (opt_w, opt_ibp):
        if opt is not None:
            opt.step()
    model.constrain_()
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


@dataclass
class _Data:
    """The training images, the validation split (the last ``val_size`` of them) and the test images."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def _load_data(cfg: TrainConfig) -> _Data:
    x, y = load_tensors(cfg.dataset, "train", root=cfg.data_root, limit=cfg.limit)
    if not 0 < cfg.val_size < len(x):
        raise ValueError(f"val_size must be between 1 and {len(x) - 1}, got {cfg.val_size}")
    xte, yte = load_tensors(cfg.dataset, "test", root=cfg.data_root, limit=cfg.test_limit)
    # Validation = the last val_size training images (for MNIST: part of the official 10k validation split).
    return _Data(x[:-cfg.val_size], y[:-cfg.val_size], x[-cfg.val_size:], y[-cfg.val_size:], xte, yte)


def _initial_model(cfg: TrainConfig) -> tuple[LWTANet, dict | None]:
    """A new model, with the weights of ``cfg.init_from`` if given; returns it and that checkpoint's record."""
    model = create_model(cfg.model, cfg.dataset)
    if not cfg.init_from:
        return model, None
    init, init_meta = load_checkpoint(cfg.init_from, expected_name=cfg.model, expected_dataset=cfg.dataset)
    model.load_state_dict(init.state_dict())
    parent = {"file": str(cfg.init_from), "sha256": sha256_file(cfg.init_from),
              "train_config": init_meta.get("train_config"), "metrics": init_meta.get("metrics"),
              "history": init_meta.get("history")}
    return model, parent


@dataclass
class _Run:
    """A run's state between epochs: what ``<out>.last.pt`` keeps so that an interrupted run resumes exactly."""

    cfg: TrainConfig
    model: LWTANet
    opt_w: torch.optim.Adam
    opt_ibp: torch.optim.Adam | None
    gen: torch.Generator  # the batch order
    epoch: int = 0  # epochs done
    best: dict = field(default_factory=lambda: {"val_acc": -1.0})
    history: list[dict] = field(default_factory=list)


# the settings an interrupted run is resumed with must equal its own: each changes the weights it ends with
# (the others only say where data lives, what to keep or report, or how many threads to use)
RESUME_SETTINGS = ("model", "dataset", "epochs", "batch_size", "lr", "ibp_lr", "final_lr_fraction", "noise_std",
                   "fgsm_eps", "val_size", "seed", "limit", "init_from")


def check_resumable(cfg: TrainConfig, last: Path, old: dict) -> None:
    """Raise ValueError unless the interrupted run in ``last`` (its ``train_config`` ``old``) has ``cfg``'s
    settings (:data:`RESUME_SETTINGS`), saying how to continue it or start over."""
    defaults = {f.name: f.default for f in fields(TrainConfig)}
    changed = [f"{k} {old.get(k, defaults[k])!r} -> {getattr(cfg, k)!r}" for k in RESUME_SETTINGS
               if old.get(k, defaults[k]) != getattr(cfg, k)]
    if not changed:
        return
    command = (old.get("extra") or {}).get("command")
    raise ValueError(f"{last} holds an interrupted run with other settings ({'; '.join(changed)}): it is not "
                     "resumed with settings it did not run with. To continue it, rerun with its own settings"
                     + (f" ({command})" if command else "") + f"; to start over with the new ones, delete {last}")


def _resume(run: _Run, last: Path) -> None:
    """Continue from ``last`` if it exists (weights, optimisers, RNGs): only a run with the same settings."""
    if not last.exists():
        return
    payload = read_checkpoint(last)
    check_resumable(run.cfg, last, payload["meta"].get("train_config") or {})
    load_state(run.model, payload["state_dict"], last)
    ex = payload.get("extra", {})
    run.opt_w.load_state_dict(ex["opt_w"])
    if run.opt_ibp is not None:
        run.opt_ibp.load_state_dict(ex["opt_ibp"])
    run.gen.set_state(ex["generator"])
    torch.set_rng_state(ex["torch_rng"])
    run.epoch, run.best, run.history = payload["meta"]["epoch"], payload["meta"]["best"], payload["meta"]["history"]
    print(f"resuming {run.cfg.model} from epoch {run.epoch} ({last})")


def _train_epoch(run: _Run, data: _Data, noise: float, progress: bool) -> dict:
    """One pass over the training images in a fresh random order; returns the smoothed loss and accuracy and the
    time it took."""
    cfg, model = run.cfg, run.model
    n_train = len(data.x_train)
    steps_per_epoch = math.ceil(n_train / cfg.batch_size)
    total_steps = cfg.epochs * steps_per_epoch
    model.train()
    t0 = time.time()
    perm = torch.randperm(n_train, generator=run.gen)
    bar = tqdm(range(steps_per_epoch), desc=f"{cfg.model} epoch {run.epoch + 1}/{cfg.epochs}",
               disable=not progress, mininterval=2.0)
    run_loss = run_acc = 0.0
    for i in bar:
        f = _lr_factor(run.epoch * steps_per_epoch + i, total_steps, cfg.final_lr_fraction)
        for opt, lr in ((run.opt_w, cfg.lr), (run.opt_ibp, cfg.ibp_lr)):
            if opt is not None:
                for g in opt.param_groups:
                    g["lr"] = lr * f
        idx = perm[i * cfg.batch_size:(i + 1) * cfg.batch_size]
        yb = data.y_train[idx]
        loss, raw = elbo_step(model, data.x_train[idx], yb, run.opt_w, run.opt_ibp, n_train, noise, cfg.fgsm_eps)
        if not math.isfinite(loss.item()):
            check_finite_weights(model, f"in epoch {run.epoch + 1}, step {i + 1}")
            raise ValueError(f"training diverged in epoch {run.epoch + 1}, step {i + 1}: the loss is {loss.item()} "
                             f"(lr {cfg.lr}, ibp_lr {cfg.ibp_lr}); nothing of this epoch was saved. Start over "
                             "with a smaller --lr / --ibp-lr (delete the run's .last.pt first if there is one)")
        with torch.no_grad():
            acc = (model.decoder(raw).argmax(1) == yb).float().mean().item()
        run_loss = 0.98 * run_loss + 0.02 * loss.item() if i else loss.item()
        run_acc = 0.98 * run_acc + 0.02 * acc if i else acc
        bar.set_postfix(loss=f"{run_loss:.4f}", acc=f"{run_acc:.4f}", refresh=False)
    return {"train_loss": run_loss, "train_acc": run_acc, "seconds": time.time() - t0}


def _end_epoch(run: _Run, data: _Data, trained: dict, out: Path) -> None:
    """Validate, record the epoch, keep the best checkpoint so far and the state to resume from."""
    check_finite_weights(run.model, f"in epoch {run.epoch + 1}")
    val_acc = _accuracy(run.model, data.x_val, data.y_val, samples=1)
    record = {"epoch": run.epoch + 1, "train_loss": trained["train_loss"], "train_acc": trained["train_acc"],
              "val_acc": val_acc, "epoch_seconds": round(trained["seconds"], 1)}
    run.history.append(record)
    run.epoch = record["epoch"]
    print(json.dumps(record))
    meta_common = {"train_config": asdict(run.cfg), "plugin_version": __version__, "torch": str(torch.__version__),
                   "n_train": len(data.x_train), "n_val": len(data.x_val)}
    if record["val_acc"] > run.best["val_acc"]:
        run.best = dict(record)
        save_checkpoint(out.with_suffix(".best.pt"), run.model, {**meta_common, "epoch": run.epoch})
    resume = {"opt_w": run.opt_w.state_dict(), "opt_ibp": run.opt_ibp.state_dict() if run.opt_ibp else {},
              "generator": run.gen.get_state(), "torch_rng": torch.get_rng_state()}
    save_checkpoint(out.with_suffix(".last.pt"), run.model,
                    {**meta_common, "epoch": run.epoch, "best": run.best, "history": run.history}, extra=resume)
    if run.epoch in run.cfg.keep_epochs:  # for experiments along one run (e.g. robustness against training length)
        save_checkpoint(epoch_path(out, run.epoch), run.model,
                        {**meta_common, "name": run.cfg.model, "dataset": run.cfg.dataset, "epoch": run.epoch,
                         "history": list(run.history)})


def epoch_path(out: str | os.PathLike, epoch: int) -> Path:
    """Where ``keep_epochs`` stores the weights after ``epoch``: ``<out stem>.epochNNN.pt`` beside ``out``."""
    out = Path(out)
    return out.with_name(f"{out.stem}.epoch{epoch:03d}.pt")


def _finish(run: _Run, data: _Data, out: Path, parent: dict | None) -> dict:
    """Test the best checkpoint, write it to ``out`` with its metrics, remove the intermediate files."""
    cfg = run.cfg
    model, _ = load_checkpoint(out.with_suffix(".best.pt"))
    torch.manual_seed(cfg.seed + 1)
    test_acc_1 = _accuracy(model, data.x_test, data.y_test, samples=1)
    test_acc_s = _accuracy(model, data.x_test, data.y_test, samples=cfg.eval_samples)
    metrics = {"best_epoch": run.best["epoch"], "val_acc": run.best["val_acc"], "test_acc_1pass": test_acc_1,
               f"test_acc_{cfg.eval_samples}samples": test_acc_s, "n_test": len(data.x_test),
               "epoch_seconds": [h["epoch_seconds"] for h in run.history]}
    meta = {"name": cfg.model, "dataset": cfg.dataset, "epoch": run.best["epoch"], "metrics": metrics,
            "train_config": asdict(cfg), "history": run.history, "plugin_version": __version__,
            "torch": str(torch.__version__), "n_train": len(data.x_train), "n_val": len(data.x_val)}
    if parent is not None:
        meta["parent"] = parent  # the checkpoint this run continued (its own command, epochs and metrics)
    sha = save_checkpoint(out, model, meta)
    out.with_suffix(".best.pt").unlink(missing_ok=True)
    out.with_suffix(".last.pt").unlink(missing_ok=True)
    print(json.dumps({"model": cfg.model, "checkpoint": str(out), "sha256": sha, **metrics}))
    return {**metrics, "sha256": sha}


def train(cfg: TrainConfig, out: str | os.PathLike, progress: bool = True) -> dict:
    """Train ``cfg.model`` and write the best-on-validation checkpoint to ``out``; returns its metrics."""
    out = Path(out)
    check_train_config(cfg)
    cfg = check_fgsm_variant(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    data = _load_data(cfg)
    noise = NOISE_STD.get(cfg.dataset, 0.0) if cfg.noise_std is None else cfg.noise_std
    model, parent = _initial_model(cfg)
    opt_w, opt_ibp = make_optimizers(model, cfg.lr, cfg.ibp_lr)
    run = _Run(cfg, model, opt_w, opt_ibp, torch.Generator().manual_seed(cfg.seed))
    _resume(run, out.with_suffix(".last.pt"))
    while run.epoch < cfg.epochs:
        _end_epoch(run, data, _train_epoch(run, data, noise, progress), out)
    return _finish(run, data, out, parent)


def _epoch_list(text: str) -> tuple[int, ...]:
    try:
        epochs = tuple(sorted({int(v) for v in text.split(",") if v.strip()}))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected epochs like 1,5,10, got {text!r}") from None
    if any(e < 1 for e in epochs):
        raise argparse.ArgumentTypeError(f"epochs must be >= 1, got {text!r}")
    return epochs


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``lwta train --model NAME [--dataset] [--epochs] ...``: train a model by registry name."""
    t = subparsers.add_parser("train",
                              help="train a model by registry name (ELBO, Adam, best-on-validation checkpoint)")
    t.add_argument("--model", required=True, help="e.g. lwta_ibp_softmax (see `lwta models`)")
    t.add_argument("--dataset", default="mnist", choices=["mnist", "fashion_mnist", "cifar10"])
    t.add_argument("--epochs", type=int, default=1)
    t.add_argument("--batch-size", type=int, default=200)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--ibp-lr", type=float, default=1e-2)
    t.add_argument("--fgsm-eps", type=float, default=0.0, help="FGSM adversarial training; needs a <name>_fgsm model, "
                   "whose default is the paper's eps (4.4: 0.3 MNIST, 0.031 CIFAR-10)")
    t.add_argument("--noise-std", type=float, default=None, help="Gaussian input noise (default per data set)")
    t.add_argument("--val-size", type=int, default=5000)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--limit", type=int, default=None, help="use only the first N training images")
    t.add_argument("--test-limit", type=int, default=None, help="report test accuracy on the first N test images")
    t.add_argument("--init-from", default=None,
                   help="continue training from this final checkpoint (same model; recorded as the parent)")
    t.add_argument("--keep-epochs", type=_epoch_list, default=(), metavar="E1,E2,...",
                   help="also keep the weights after these epochs as <out stem>.epochNNN.pt (experiments along a run)")
    t.add_argument("--threads", type=int, default=None)
    t.add_argument("--data-root", default=None)
    t.add_argument("--out", default=None, help="checkpoint path (default runs/<model>_<dataset>_s<seed>.pt)")
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(func=train_command)
    return t


def interrupted_message(out: Path) -> str:
    """The line ``lwta train`` prints when interrupted (Ctrl-C): where the finished epochs are, how to resume."""
    last = out.with_suffix(".last.pt")
    if last.is_file():
        return (f"lwta: interrupted; the state after the last finished epoch is in {last}: rerun the same command "
                "to resume from there")
    return "lwta: interrupted before the first epoch finished (nothing saved); rerun the same command to start again"


def train_command(args: argparse.Namespace) -> int:
    """Run ``lwta train``; the checkpoint records the command line (``args.argv``: the arguments after ``train``,
    set by :func:`lwta_plugin.cli.main`; ``sys.argv`` if absent)."""
    argv = getattr(args, "argv", None)
    command = "lwta train " + " ".join(sys.argv[2:] if argv is None else argv)
    cfg = TrainConfig(model=args.model, dataset=args.dataset, epochs=args.epochs, batch_size=args.batch_size,
                      lr=args.lr, ibp_lr=args.ibp_lr, fgsm_eps=args.fgsm_eps, val_size=args.val_size,
                      seed=args.seed, limit=args.limit, test_limit=args.test_limit, init_from=args.init_from,
                      threads=args.threads, data_root=args.data_root, noise_std=args.noise_std,
                      keep_epochs=args.keep_epochs, extra={"command": command})
    out = args.out or f"runs/{args.model}_{args.dataset}_s{args.seed}.pt"
    try:
        metrics = train(cfg, out, progress=not args.no_progress)
    except KeyboardInterrupt:
        print(interrupted_message(Path(out)), file=sys.stderr)
        return 130
    print(f"test accuracy ({metrics['n_test']} images): 1 pass {metrics['test_acc_1pass']:.4f}, "
          f"{cfg.eval_samples}-sample average {metrics[f'test_acc_{cfg.eval_samples}samples']:.4f}")
    return 0
