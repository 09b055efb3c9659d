"""The fusion stage on Ray: every fusion scored, refitted and applied at once.

The fusion code itself is Ray-free (``ensemble.fusion``); this only spreads
the independent fusions over the cluster's CPUs, one Ray task each, with the
inputs put once, and keeps the ones that finish by the deadline.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import ray

from . import budget
from . import fusion as fusion_mod
from .exceptions import describe
from .specs import FusionOutcome

__all__ = ["fuse_all", "fusion_specs"]

logger = logging.getLogger(__name__)

#: Metrics of probabilities for which a fusion's output may be temperature
#: scaled (``ensemble.fusion.calibrate_nested``); ranking metrics such as AUC
#: are left alone, since a temperature per outer fold would move them.
CALIBRATED_METRICS = frozenset({"log_loss"})


def fusion_specs(
    keys: Sequence[str], *, metric: str, seed: int, n_members: int
) -> list[tuple[str, dict[str, Any]]]:
    """``(key, params)`` of each fusion that has enough members, in scoring order.

    Cheapest first (:data:`ensemble.budget.FUSION_ORDER`): under a deadline the
    slow ones are the ones dropped.
    """
    specs = []
    for key in budget.fusion_order(keys):
        proto = fusion_mod.make(key)
        if n_members < proto.min_members:
            logger.info("fusion %s skipped: it needs more members", key)
            continue
        params: dict[str, Any] = {}
        if "random_state" in proto.get_params():
            params["random_state"] = seed
        if key == "selection":
            params["metric"] = metric  # select for the metric the run ranks by
        specs.append((key, params))
    return specs


def _fuse_one(
    key: str,
    params: dict[str, Any],
    P: np.ndarray,
    y: np.ndarray,
    folds: np.ndarray,
    X: np.ndarray,
    H: np.ndarray,
    X_hold: np.ndarray,
    metric: str,
) -> FusionOutcome:
    t0 = time.perf_counter()
    est = fusion_mod.make(key, **params)
    feats = est.uses_features
    nested = fusion_mod.nested_cv(
        est, P, y, folds, metric=metric, X=X if feats else None
    )
    est.fit(P, y, X if feats else None)
    if metric in CALIBRATED_METRICS:  # probability metrics: P is 3-D
        calibrated = fusion_mod.calibrate_nested(nested, y, folds, metric=metric)
        if calibrated is not None:
            nested, est.sharpen_ = calibrated
    pred = est.predict(H, X_hold if feats else None) if len(H) else H[:, 0]
    return FusionOutcome(
        key, nested.score, nested.preds, pred, est, time.perf_counter() - t0
    )


def fuse_all(
    specs: Sequence[tuple[str, dict[str, Any]]],
    P: np.ndarray,
    y: np.ndarray,
    folds: np.ndarray,
    X: np.ndarray,
    H: np.ndarray,
    X_hold: np.ndarray,
    *,
    metric: str,
    finish_by: float | None = None,
    extend: Callable[[list[FusionOutcome]], float | None] | None = None,
) -> list[FusionOutcome]:
    """Score, refit and apply every fusion, one Ray task per fusion.

    Parameters
    ----------
    specs : sequence of (str, dict)
        From :func:`fusion_specs`.
    P, y, folds, X : ndarray
        Members' OOF predictions, targets, fold ids and raw features of the
        OOF rows.
    H, X_hold : ndarray
        Members' holdout predictions and the holdout rows' features.
    metric : str
        The metric of the nested-CV score.
    finish_by : float, optional
        ``time.monotonic()`` by which fusions must be done; the unfinished
        ones are cancelled and left out.
    extend : callable, optional
        Called with the fusions finished so far after each one; a later
        instant it returns becomes the deadline.

    Returns
    -------
    list of FusionOutcome
        In the order of ``specs``.
    """
    refs = [ray.put(a) for a in (P, y, folds, X, H, X_hold)]
    task: Any = ray.remote(num_cpus=1, max_retries=2)(_fuse_one)
    pending = {task.remote(key, params, *refs, metric): key for key, params in specs}
    out: dict[str, FusionOutcome] = {}
    while pending:
        timeout = None if finish_by is None else max(0.0, finish_by - time.monotonic())
        done, _ = ray.wait(list(pending), num_returns=1, timeout=timeout)
        if not done:  # out of time: keep the fusions that finished
            logger.warning(
                "time limit: fusions %s not finished", sorted(pending.values())
            )
            for ref in pending:
                ray.cancel(ref, force=True)
            break
        key = pending.pop(done[0])
        try:
            out[key] = ray.get(done[0])
        except ray.exceptions.RayTaskError as exc:
            logger.warning("fusion %s failed: %s", key, describe(exc))
            continue
        if extend is not None and finish_by is not None:
            later = extend(list(out.values()))
            if later is not None and later > finish_by:
                logger.info("fusions may run %.1f s longer", later - finish_by)
                finish_by = later
    return [out[k] for k, _ in specs if k in out]
