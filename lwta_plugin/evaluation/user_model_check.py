"""Checking the entry of a model from outside the plugin against the model its factory builds now (``lwta verify``):
the state_dict sha256 of the model and of its surrogate, and the randomness measured again."""
from __future__ import annotations

import torch

from ..checkpoint import state_sha256
from ..data import SHAPES
from .foreign import build_from_factory
from .user_model import measure_randomness

CHECK_SEED = 0  # the uniform images the randomness is measured on


def check_user_entry(entry: dict) -> list[str]:
    """Problems (one line each) between ``entry`` (checkpoint source ``user`` with a factory) and the model its
    factory builds: an import that fails, another state_dict sha256 (model or surrogate), other randomness."""
    cfg = entry["checkpoint"]["config"]
    try:
        model = build_from_factory(cfg["factory"], "factory")
    except Exception as e:  # any failure of the user's code is a problem of the entry, reported on one line
        return [f"cannot rebuild the model from its factory {cfg['factory']} ({type(e).__name__}: {e})"]
    problems = []
    sha = state_sha256(model.state_dict())
    if sha != entry["checkpoint"]["sha256"]:
        problems.append(f"the factory {cfg['factory']} builds a model with state_dict sha256 {sha}, the entry "
                        f"evaluated {entry['checkpoint']['sha256']}: re-evaluate the model")
    surrogate = cfg.get("surrogate") or {}
    if surrogate.get("factory"):
        try:
            s_sha = state_sha256(build_from_factory(surrogate["factory"], "surrogate factory").state_dict())
        except Exception as e:
            problems.append(f"cannot rebuild the surrogate from {surrogate['factory']} ({type(e).__name__}: {e})")
        else:
            if s_sha != surrogate["sha256"]:
                problems.append(f"the surrogate factory {surrogate['factory']} builds state_dict sha256 {s_sha}, the "
                                f"entry used {surrogate['sha256']}: re-evaluate the model")
    x = torch.rand((8, *SHAPES[entry["dataset"]]), generator=torch.Generator().manual_seed(CHECK_SEED))
    measured = measure_randomness(model.eval(), x)
    if measured != cfg["randomness"]["measured"]:
        problems.append(f"the model's randomness measures {measured} now, the entry recorded "
                        f"{cfg['randomness']['measured']}")
    return problems
