#!/usr/bin/env bash
# Train the shipped MNIST models (the exact commands behind lwta_plugin/weights/manifest.json).
# Models named *_fgsm are FGSM adversarially trained (paper 4.4, eps 0.3, loss = (clean + FGSM) / 2).
# Each run: ELBO training, Adam (weights lr 1e-3, IBP lr 1e-2, polynomial decay), batch 200, Gaussian input noise 0.3,
# validation = last 5,000 training images, seed 0; the best-on-validation epoch is kept. Resumable: rerunning
# continues an interrupted model and skips finished ones. One torch thread per run, so that an evaluation can use
# the other core (the shipped lwta_ibp_softmax was trained with 2 threads before the queue got this flag).
# Ship with `python scripts/ship_model.py runs/mnist/<name>.pt --card`.
# Usage: scripts/train_mnist_zoo.sh [name ...]   (default: all, in priority order)
set -euo pipefail
cd "$(dirname "$0")/.."
# Epochs are what 2 CPU cores allow in one session beside the evaluations (the paper trains 100): the LWTA & IBP
# U = 2 models get 5 (Softmax, Tanh16) or 8 (Logistic, LogisticEns10: they learn more slowly), every other model 1.
# The manifest and each model card record the epochs and accuracies.
# The Table 4 rows added later (issue 14) get 3 epochs (2 for the LogisticEns10 networks, whose epochs cost twice as
# much); each card shows its learning curve.
declare -A EPOCHS=([lwta_ibp_softmax]=5 [lwta_ibp_tanh16]=5 [lwta_ibp_logistic]=8 [lwta_ibp_logisticens10]=8
                   [relu_logisticens10]=2 [lwta_logisticens10]=2 [lwtamax_logisticens10]=2
                   [lwtamax_ibp_logisticens10]=2 [lwtamax_logistic]=3 [lwtamax_ibp_logistic]=3 [lwtamax_tanh16]=3
                   [lwtamax_ibp_tanh16]=3 [lwta_ibp_softmax_refcode]=5)
# lwta_ibp_softmax_refcode: the authors' code behaviour (issue 13 part 3), trained exactly as lwta_ibp_softmax.
# Continued training (lwta train --init-from): lwta_ibp_tanh16 reached 98.89 % (S = 5) after its 5 epochs, below the
# 99 % its RobustBench entry promises, so its 5-epoch checkpoint (runs/mnist/base/) is trained 3 more epochs at a
# lower learning rate. The shipped checkpoint records the parent's sha256, command and epochs.
# lwta_ibp_logisticens10 reached 98.72 % after its 8 epochs (paper 99.3): continued 2 epochs at a lower rate.
declare -A CONTINUE=([lwta_ibp_tanh16]="--epochs 3 --lr 3e-4 --ibp-lr 3e-3 --seed 1"
                     [lwta_ibp_logisticens10]="--epochs 2 --lr 3e-4 --ibp-lr 3e-3 --seed 1")
ORDER=(lwta_ibp_softmax lwta_ibp_tanh16 relu_softmax lwta_softmax lwta_ibp_logistic lwta_ibp_logisticens10
       lwtamax_softmax lwtamax_ibp_softmax lwta_ibp_softmax_u4 relu_tanh16 lwta_tanh16 relu_logistic lwta_logistic
       relu_logisticens10 lwta_logisticens10 lwtamax_logisticens10 lwtamax_ibp_logisticens10 lwta_softmax_u4
       lwtamax_logistic lwtamax_ibp_logistic lwtamax_tanh16 lwtamax_ibp_tanh16
       relu_softmax_fgsm lwta_softmax_fgsm lwta_ibp_softmax_fgsm lwta_ibp_softmax_refcode)
[ $# -gt 0 ] && ORDER=("$@")
mkdir -p runs/mnist runs/logs
for name in "${ORDER[@]}"; do
  out=runs/mnist/$name.pt
  if [ -f "$out" ]; then echo "skip $name (exists)"; continue; fi
  first=$out
  [ -n "${CONTINUE[$name]:-}" ] && first=runs/mnist/base/$name.pt && mkdir -p runs/mnist/base
  if [ ! -f "$first" ]; then
    lwta train --model "$name" --dataset mnist --epochs "${EPOCHS[$name]:-1}" --seed 0 --out "$first" --threads 1 \
      >> "runs/logs/$name.log" 2>&1 || { echo "FAILED $name (see runs/logs/$name.log)"; continue; }
  fi
  if [ "$first" != "$out" ]; then
    # shellcheck disable=SC2086  # the options are a word list
    lwta train --model "$name" --dataset mnist ${CONTINUE[$name]} --init-from "$first" --out "$out" --threads 1 \
      >> "runs/logs/${name}_continued.log" 2>&1 || echo "FAILED continuing $name"
  fi
  tail -n 1 "runs/logs/$name.log"
done
