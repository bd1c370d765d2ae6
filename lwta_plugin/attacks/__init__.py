"""Attacks for stochastic networks, one per module, built by name with :func:`build_attack`.

Names (as :mod:`lwta_plugin.protocols` uses them): ``pgd``, ``fgsm``, ``noise``, ``cw``, ``bsa``, ``eot_pgd``,
``eot_pgd_margin``, ``apgd_rand``, ``transfer``, ``bpda``, ``torchattacks_pgd`` (the registry is
:mod:`lwta_plugin.attacks.registry`). Every attack is called as ``attack(x, y) -> x_adv`` on images in [0, 1] and
records its resolved hyperparameters in ``attack.hparams``; its class states what kind of attack it is
(``bounded``, ``white_box``, ``iterative``, ``budget_keys``). The paper's "Random" score is :func:`lwta_plugin.attacks.random.random_score`; attack-failure
indicators are in :mod:`lwta_plugin.attacks.indicators`.
"""
from __future__ import annotations

from .apgd import APGDRand
from .base import Attack
from .bpda import BPDA
from .bsa import BSA
from .cw import CW
from .eot_pgd import EOTPGD
from .eot_pgd_margin import EOTPGDMargin
from .fgsm import FGSM
from .noise import Noise
from .pgd import PGD
from .registry import ATTACKS, build_attack, list_attacks
from .torchattacks_pgd import TorchattacksPGD
from .transfer import Transfer

__all__ = ["ATTACKS", "BPDA", "BSA", "CW", "EOTPGD", "FGSM", "PGD", "APGDRand", "Attack", "EOTPGDMargin", "Noise",
           "TorchattacksPGD", "Transfer", "build_attack", "list_attacks"]
