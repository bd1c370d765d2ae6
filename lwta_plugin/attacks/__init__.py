"""Attacks for stochastic networks, one per module, built by name with :func:`build_attack`.

Names (as :mod:`lwta_plugin.protocols` uses them): ``pgd``, ``fgsm``, ``noise``, ``cw``, ``bsa``, ``eot_pgd``,
``eot_pgd_margin``, ``apgd_rand``, ``transfer``, ``bpda``. Every attack is called as ``attack(x, y) -> x_adv`` on
images in [0, 1] and records its resolved hyperparameters in ``attack.hparams``. The paper's "Random" score is
:func:`lwta_plugin.attacks.random.random_score`; attack-failure indicators are in
:mod:`lwta_plugin.attacks.indicators`.
"""
from __future__ import annotations

from typing import Any

from torch import nn

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
from .transfer import Transfer

ATTACKS: dict[str, type[Attack]] = {cls.name: cls for cls in (PGD, FGSM, Noise, CW, BSA, EOTPGD, EOTPGDMargin,
                                                              APGDRand, Transfer, BPDA)}


def list_attacks() -> list[str]:
    """Registered attack names."""
    return sorted(ATTACKS)


def build_attack(name: str, model: nn.Module, **params: Any) -> Attack:
    """The attack ``name`` on ``model`` with hyperparameters ``params``.

    Raises ValueError for an unknown name or an invalid value, TypeError for an unknown parameter.
    """
    if name not in ATTACKS:
        raise ValueError(f"unknown attack {name!r}; expected one of {', '.join(list_attacks())}")
    return ATTACKS[name](model, **params)


__all__ = ["ATTACKS", "BPDA", "BSA", "CW", "EOTPGD", "FGSM", "PGD", "APGDRand", "Attack", "EOTPGDMargin", "Noise",
           "Transfer", "build_attack", "list_attacks"]
