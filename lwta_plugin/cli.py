"""Command line: ``lwta train | evaluate | leaderboard | plots | models``."""
from __future__ import annotations

import argparse
import sys


def _train(args: argparse.Namespace) -> int:
    from .train import TrainConfig, train

    cfg = TrainConfig(model=args.model, dataset=args.dataset, epochs=args.epochs, batch_size=args.batch_size,
                      lr=args.lr, ibp_lr=args.ibp_lr, fgsm_eps=args.fgsm_eps, val_size=args.val_size,
                      seed=args.seed, limit=args.limit, test_limit=args.test_limit, init_from=args.init_from,
                      threads=args.threads, data_root=args.data_root, noise_std=args.noise_std,
                      extra={"command": "lwta train " + " ".join(sys.argv[2:] if args.argv is None else args.argv)})
    out = args.out or f"runs/{args.model}_{args.dataset}_s{args.seed}.pt"
    metrics = train(cfg, out, progress=not args.no_progress)
    print(f"test accuracy ({metrics['n_test']} images): 1 pass {metrics['test_acc_1pass']:.4f}, "
          f"{cfg.eval_samples}-sample average {metrics[f'test_acc_{cfg.eval_samples}samples']:.4f}")
    return 0


def _models(args: argparse.Namespace) -> int:
    from .models import list_models

    print("\n".join(list_models()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lwta", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model by registry name (ELBO, Adam, best-on-validation checkpoint)")
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
    t.add_argument("--threads", type=int, default=None)
    t.add_argument("--data-root", default=None)
    t.add_argument("--out", default=None, help="checkpoint path (default runs/<model>_<dataset>_s<seed>.pt)")
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(func=_train)

    m = sub.add_parser("models", help="list registered architectures")
    m.set_defaults(func=_models)

    from .evaluation import add_evaluate_parser
    from .leaderboard import add_leaderboard_parser
    from .plots import add_plots_parser

    add_evaluate_parser(sub)
    add_leaderboard_parser(sub)
    add_plots_parser(sub)
    return p


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions whose message is the whole story (printed without a traceback)."""
    from .evaluation import EvaluationError

    return (ValueError, FileNotFoundError, EvaluationError)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = None if argv is None else argv[1:]
    try:
        return args.func(args)
    except KeyboardInterrupt:
        if args.command != "evaluate":
            raise
        print("lwta: interrupted; finished batches are kept: rerun the same command to resume", file=sys.stderr)
        return 130
    except Exception as e:
        if not isinstance(e, _user_errors()):
            raise
        print(f"lwta: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
