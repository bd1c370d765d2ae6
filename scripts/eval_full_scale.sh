#!/usr/bin/env bash
# Issue 17, part 4: the adaptive protocol at its own counts (clean, FGSM and noise on the 10,000 test images; the
# cascade on the first 1,000; every attack standalone on the first 200) for every shipped MNIST model, one model
# after another on one torch thread (the other core stays free for other work), into experiments/full-scale/.
# Resumable: each model's finished batches are in experiments/full-scale/mnist/Linf/.<model>__adaptive.partial/
# (commit them at the end of a session); rerunning the script continues where it stopped and skips finished models.
# A finished entry is published: copied with its timing file into leaderboard/mnist/Linf/ (replacing the smaller
# adaptive entry there), then the leaderboard and FINDINGS are re-rendered.
# Usage: scripts/eval_full_scale.sh [model ...]   (default: every shipped MNIST model, in the order below)
# Two queues may run at once (one per core): each skips the model the other holds and takes the next.
# Order: the published headline model, then the deterministic models (ReLU and LWTAmax without IBP: one pass per
# prediction, minutes each), then the FGSM-trained ones (is their ~50 % under PGD gradient masking?) and the README's
# lwta_ibp_tanh16, then the rest.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
LWTA=${LWTA:-.venv/bin/lwta}
OUT=experiments/full-scale
ORDER=(lwta_ibp_softmax
       relu_softmax relu_tanh16 relu_logistic relu_logisticens10 relu_softmax_fgsm
       lwtamax_softmax lwtamax_tanh16 lwtamax_logistic lwtamax_logisticens10
       lwta_ibp_softmax_fgsm lwta_softmax_fgsm lwta_ibp_tanh16
       lwta_softmax lwta_tanh16 lwta_logistic lwta_ibp_logistic lwta_ibp_softmax_u4 lwta_softmax_u4
       lwtamax_ibp_softmax lwtamax_ibp_tanh16 lwtamax_ibp_logistic lwta_logisticens10 lwta_ibp_logisticens10
       lwtamax_ibp_logisticens10 lwta_ibp_softmax_refcode)
[ $# -gt 0 ] && ORDER=("$@")
shipped=$("$PY" -c "import lwta_plugin.zoo as z; print(' '.join(k.split('/')[1] for k in z.read_manifest()['models'] if k.startswith('mnist/')))")
failed=0
for name in "${ORDER[@]}"; do
  case " $shipped " in *" $name "*) ;; *) echo "skip $name (not shipped)"; continue ;; esac
  entry=$OUT/mnist/Linf/${name}__adaptive.json
  echo "=== $name ($(date -u +%FT%TZ))"
  # a model another queue is evaluating (its lock is held) or one that fails is skipped: the queue goes on
  if ! "$LWTA" evaluate --model "$name" --protocol adaptive --threads 1 --out-dir "$OUT" --no-progress; then
    echo "skipped $name (failed, or another process holds its state: see above)"; failed=1; continue
  fi
  [ -f "$entry" ] && [ ! -d "$OUT/mnist/Linf/.${name}__adaptive.partial" ] || continue
  published=leaderboard/mnist/Linf/${name}__adaptive.json
  if ! cmp -s "$entry" "$published"; then
    cp "$entry" "$published"
    mkdir -p leaderboard/mnist/Linf/timing
    cp "$OUT/mnist/Linf/timing/${name}__adaptive.json" leaderboard/mnist/Linf/timing/
    "$PY" -c "import sys, pathlib; from lwta_plugin.evaluation import refresh_combined; refresh_combined(pathlib.Path(sys.argv[1]))" "$published"
    "$LWTA" leaderboard
    "$PY" scripts/findings_table.py --write
    echo "published $published"
  fi
done
exit $failed
