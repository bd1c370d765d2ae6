"""The attacks by name (as :mod:`lwta_plugin.protocols` uses them) and :func:`build_attack`."""
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
from .torchattacks_pgd import TorchattacksPGD
from .transfer import Transfer

ATTACKS: dict[str, type[Attack]] = {cls.name: cls for cls in (PGD, FGSM, Noise, CW, BSA, EOTPGD, EOTPGDMargin,
                                                              APGDRand, Transfer, BPDA, TorchattacksPGD)}


def list_attacks() -> list[str]:
    """Registered attack names."""
    return sorted(ATTACKS)


def build_attack(name: str, model: nn.Module, **params: Any) -> Attack:
    """The attack ``name`` on ``model`` with hyperparameters ``params``.

    Raises ValueError for an unknown name or an invalid value, TypeError for an unknown parameter.
    """
    if name not in ATTACKS:
        raise ValueError(f"unknown attack {name!r}; expected one of {', '.join(list_attacks())}")
    early = {k: params.pop(k) for k in ("early_exit", "confirm_samples") if k in params}
    attack = ATTACKS[name](model, **params)
    if early:
        attack.set_early_exit(early.get("early_exit", 0), early.get("confirm_samples", 5))
    return attack
