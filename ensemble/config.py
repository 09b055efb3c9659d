"""Run configuration: one frozen dataclass, loaded from YAML and/or CLI flags.

Precedence is defaults < YAML file < CLI flags, resolved in :func:`resolve`.
Unknown keys and bad values are collected and reported together in one
:class:`~ensemble.exceptions.ConfigError`.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .exceptions import ConfigError

__all__ = ["DEFAULT_FUSIONS", "DEFAULT_LEARNERS", "TASKS", "RunConfig", "resolve"]

TASKS = ("auto", "binary", "multiclass", "regression")
# Every family in the design; diversity across families is what fusion feeds on.
DEFAULT_LEARNERS = ("linear", "knn", "rf", "et", "hgb", "lgbm", "xgb", "cat", "mlp")
DEFAULT_FUSIONS = (
    "average",
    "weighted",
    "selection",
    "stacking",
    "stacking_nonneg",
    "stacking_lgbm",
    "neural",
    "two_level",
)


@dataclass(frozen=True)
class RunConfig:
    """Everything one ``ensemble fit`` run needs.

    Parameters
    ----------
    data : str or None, default=None
        Path to a Parquet/CSV/TSV file (optionally ``.gz``) or ``sklearn:NAME``.
    target : str or None, default=None
        Name of the target column.
    task : {"auto", "binary", "multiclass", "regression"}, default="auto"
        Learning task; ``"auto"`` infers it from the target column.
    out : str, default="runs"
        Parent directory of the run directory ``<out>/<run_id>/``.
    learners : tuple of str, default=DEFAULT_LEARNERS
        Registry keys of the base learner families.
    portfolio : bool, default=True
        Fit each family's portfolio configurations (``Learner.portfolio``,
        e.g. ``lgbm_xt``, ``lgbm_large``) beside its defaults.
    fusions : tuple of str, default=DEFAULT_FUSIONS
        Fusion strategies to fit and compare.
    n_folds : int, default=5
        Number of cross-validation folds that produce out-of-fold predictions.
    holdout : float, default=0.0
        Fraction of rows held out from every fit and used only for scoring
        (``holdout.parquet``, the leaderboard's holdout metrics). 0 puts every
        row in the folds: models are chosen and scored on OOF predictions.
    seed : int, default=0
        Seed for the holdout split, the folds and every learner.
    time_limit : float or None, default=None
        Wall-clock budget of the whole run in seconds: about 45% goes to
        tuning, the rest to fitting the members and the fusions.
    tune : bool or None, default=None
        Search hyperparameters with Ray Tune; None tunes when ``time_limit`` or
        ``n_trials`` is set.
    n_trials : int or None, default=None
        Tune trials per learner family (None: as many as the budget allows).
    top_n : int, default=2
        Best configurations per tuned family that become members: a second
        config adds diversity for fusion at the cost of one more set of fits.
    repeats : int or None, default=None
        Fold assignments per member (repeated bagging: each repeat fits the
        member again on a fresh shuffle of the same rows, and its OOF and
        predictions are averaged). None: 1 without a time limit; under one,
        the strongest members are repeated while time is left.
    search : {"optuna", "random"}, default="optuna"
        Tune search algorithm (Optuna TPE, seeded, or random search).
    metric : str or None, default=None
        Metric that ranks models; defaults to ``roc_auc`` (binary), ``log_loss``
        (multiclass) or ``rmse`` (regression).
    learner_params : dict, default={}
        Per-learner parameter overrides, ``{"lgbm": {"num_leaves": 63}}``.
    cpus_per_fit : int, default=1
        CPUs each (member, fold) fit reserves; 1 keeps every core busy with
        independent fits, which beats threading inside one fit at this size.
    drop_columns : tuple of str, default=()
        Columns ignored as features (ids, leaks).
    address : str or None, default=None
        Ray address; ``None`` starts a local Ray unless ``RAY_ADDRESS`` is set.
    run_id : str or None, default=None
        Name of the run directory; a timestamp when ``None``.
    verbose : int, default=1
        0 quiet, 1 one line per finished fit, 2 also Ray's own logs.
    report : bool, default=True
        Write ``report.html`` at the end of the run.
    keep_models : {"chosen", "all"}, default="chosen"
        Models kept in the run directory: those the chosen model needs to
        predict (its members, less the ones its fusion weighs by exactly
        zero; their refits on every row when ``refit``), or every member's
        fold models and every fusion too. The OOF predictions and leaderboard
        rows of every member are kept either way.
    refit : bool, default=True
        Refit the chosen model's members once on every row
        (``models/<member>/full``) and predict with them: one model per member
        to store, load and run instead of one per fold and repeat
        (``ensemble.refit``). False predicts with the fold models' average.
    warm_start : str or None, default=None
        A complete earlier run (path or URI) whose MLP fold models are the
        starting weights of this run's MLP members (transfer learning; nightly
        retraining). Its feature schema must match this data's.
    """

    data: str | None = None
    target: str | None = None
    task: str = "auto"
    out: str = "runs"
    learners: tuple[str, ...] = DEFAULT_LEARNERS
    portfolio: bool = True
    fusions: tuple[str, ...] = DEFAULT_FUSIONS
    n_folds: int = 5  # the usual bias/variance compromise for stacking (Wolpert)
    # Every row trains a model: the OOF predictions score and choose honestly,
    # and a held-out fifth would cost the fold models a fifth of the data.
    holdout: float = 0.0
    seed: int = 0
    time_limit: float | None = None
    tune: bool | None = None
    n_trials: int | None = None
    top_n: int = 2
    repeats: int | None = None
    search: str = "optuna"
    metric: str | None = None
    learner_params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    cpus_per_fit: int = 1
    drop_columns: tuple[str, ...] = ()
    address: str | None = None
    run_id: str | None = None
    verbose: int = 1
    report: bool = True
    keep_models: str = "chosen"
    refit: bool = True
    warm_start: str | None = None

    def __post_init__(self) -> None:
        # Normalise list-like fields so YAML lists and CLI tuples compare equal.
        for name in ("learners", "fusions", "drop_columns"):
            value = getattr(self, name)
            if isinstance(value, str):
                value = tuple(v.strip() for v in value.split(",") if v.strip())
            object.__setattr__(self, name, tuple(value))
        problems = self._problems()
        if problems:
            raise ConfigError("; ".join(problems))

    def _problems(self) -> list[str]:
        from .fusion import available as fusions_available
        from .learners import available as learners_available
        from .metrics import METRICS

        p: list[str] = []
        if not isinstance(self.n_folds, int) or self.n_folds < 2:
            p.append(f"`n_folds` must be an integer >= 2; got {self.n_folds!r}")
        if not isinstance(self.holdout, (int, float)) or not 0 <= self.holdout < 1:
            p.append(f"`holdout` must be a fraction in [0, 1); got {self.holdout!r}")
        if self.time_limit is not None and (
            not isinstance(self.time_limit, (int, float)) or self.time_limit <= 0
        ):
            p.append(f"`time_limit` must be > 0 seconds; got {self.time_limit!r}")
        if self.n_trials is not None and (
            not isinstance(self.n_trials, int) or self.n_trials < 1
        ):
            p.append(f"`n_trials` must be an integer >= 1; got {self.n_trials!r}")
        if not isinstance(self.top_n, int) or self.top_n < 1:
            p.append(f"`top_n` must be an integer >= 1; got {self.top_n!r}")
        if self.repeats is not None and (
            not isinstance(self.repeats, int) or self.repeats < 1
        ):
            p.append(f"`repeats` must be an integer >= 1; got {self.repeats!r}")
        if self.keep_models not in ("chosen", "all"):
            p.append(
                f"`keep_models` must be 'chosen' or 'all'; got {self.keep_models!r}"
            )
        if self.search not in ("optuna", "random"):
            p.append(f"`search` must be 'optuna' or 'random'; got {self.search!r}")
        if self.task not in TASKS:
            p.append(f"`task` must be one of {', '.join(TASKS)}; got {self.task!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            p.append(f"`seed` must be an integer; got {self.seed!r}")
        if not isinstance(self.cpus_per_fit, int) or self.cpus_per_fit < 1:
            p.append(
                f"`cpus_per_fit` must be an integer >= 1; got {self.cpus_per_fit!r}"
            )
        if not self.learners:
            p.append("`learners` must name at least one learner")
        known = learners_available()
        for key in self.learners:
            if key not in known:
                p.append(_unknown("learner", key, known))
        if len(set(self.learners)) != len(self.learners):
            p.append(f"`learners` has duplicates: {list(self.learners)}")
        for key in self.learner_params:
            if key not in known:
                p.append(_unknown("learner in `learner_params`", key, known))
        fknown = fusions_available()
        for key in self.fusions:
            if key not in fknown:
                p.append(_unknown("fusion", key, fknown))
        if self.metric is not None and self.metric not in METRICS:
            p.append(_unknown("metric", self.metric, sorted(METRICS)))
        return p

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> RunConfig:
        """Build a config from a mapping, rejecting unknown keys with a hint.

        Parameters
        ----------
        values : mapping
            Keys are field names; ``-`` may stand for ``_``.

        Returns
        -------
        RunConfig
        """
        names = [f.name for f in dataclasses.fields(cls)]
        clean: dict[str, Any] = {}
        problems: list[str] = []
        for raw_key, value in values.items():
            key = str(raw_key).replace("-", "_")
            if key not in names:
                problems.append(_unknown("config key", str(raw_key), names))
            else:
                clean[key] = value
        if problems:
            raise ConfigError("; ".join(problems))
        return cls(**clean)

    @classmethod
    def from_yaml(cls, path: str | Path) -> RunConfig:
        """Load a config from a YAML file (see :func:`resolve` for overrides)."""
        return resolve(path, {})

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of every field."""
        d = dataclasses.asdict(self)
        for name in ("learners", "fusions", "drop_columns"):
            d[name] = list(d[name])
        d["learner_params"] = {k: dict(v) for k, v in self.learner_params.items()}
        return d

    @property
    def tuning(self) -> bool:
        """Whether this run searches hyperparameters."""
        if self.tune is not None:
            return bool(self.tune)
        return self.time_limit is not None or self.n_trials is not None

    def replace(self, **changes: Any) -> RunConfig:
        """Return a copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


def _unknown(what: str, key: str, valid: list[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(key, list(valid), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown {what} {key!r}{hint}; valid: {', '.join(valid)}"


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, with one-line errors for a missing or bad file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist; check the path")
    try:
        values = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"config file {str(p)!r} is not valid YAML{where}") from exc
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(
            f"config file {str(p)!r} must hold a mapping of keys to values; "
            f"got {type(values).__name__}"
        )
    return values


def resolve(
    path: str | Path | None, overrides: Mapping[str, Any] | None = None
) -> RunConfig:
    """Resolve defaults < YAML file < explicit overrides into one config.

    Parameters
    ----------
    path : path-like or None
        YAML config file, or ``None`` for defaults only.
    overrides : mapping, optional
        Values given explicitly (CLI flags); ``None`` values are ignored.

    Returns
    -------
    RunConfig
    """
    values: dict[str, Any] = read_yaml(path) if path is not None else {}
    for key, value in (overrides or {}).items():
        if value is not None:
            values[key] = value
    return RunConfig.from_dict(values)
