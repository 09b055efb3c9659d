"""Search spaces declared beside each learner, in a small Ray-free format.

A space maps a parameter to one of::

    ("uniform", low, high)      ("loguniform", low, high)
    ("int", low, high)          ("int_log", low, high)     (inclusive)
    ("choice", [v1, v2, ...])

``ensemble.tune`` turns it into Ray Tune domains; :func:`sample` draws from it
with numpy (tests, and anything that must not import Ray).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["Space", "sample", "validate"]

Space = dict[str, tuple[Any, ...]]
KINDS = ("uniform", "loguniform", "int", "int_log", "choice")


def validate(space: Space) -> None:
    """Raise ValueError for a malformed space."""
    for name, spec in space.items():
        kind = spec[0]
        if kind not in KINDS:
            raise ValueError(f"space {name!r}: unknown kind {kind!r}; use {KINDS}")
        if kind == "choice":
            if len(spec) != 2 or not spec[1]:
                raise ValueError(f"space {name!r}: choice needs a non-empty list")
        elif len(spec) != 3 or not spec[1] < spec[2]:
            raise ValueError(f"space {name!r}: needs low < high; got {spec[1:]}")
        elif kind in ("loguniform", "int_log") and spec[1] <= 0:
            raise ValueError(f"space {name!r}: a log scale needs low > 0")


def sample(space: Space, rng: np.random.Generator) -> dict[str, Any]:
    """One random configuration from ``space``."""
    out: dict[str, Any] = {}
    for name, spec in space.items():
        kind = spec[0]
        if kind == "uniform":
            out[name] = float(rng.uniform(spec[1], spec[2]))
        elif kind == "loguniform":
            out[name] = float(
                math.exp(rng.uniform(math.log(spec[1]), math.log(spec[2])))
            )
        elif kind == "int":
            out[name] = int(rng.integers(spec[1], spec[2] + 1))
        elif kind == "int_log":
            lo, hi = math.log(spec[1]), math.log(spec[2] + 1)
            out[name] = min(int(math.exp(rng.uniform(lo, hi))), spec[2])
        else:
            choices = spec[1]
            out[name] = choices[int(rng.integers(len(choices)))]
    return out
