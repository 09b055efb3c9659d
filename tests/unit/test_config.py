import pytest

from ensemble.config import DEFAULT_LEARNERS, RunConfig, resolve
from ensemble.exceptions import ConfigError


def test_defaults_are_valid_and_documented():
    c = RunConfig()
    assert c.n_folds == 5 and c.holdout == 0.0 and c.learners == DEFAULT_LEARNERS
    assert c.portfolio and c.repeats is None
    assert RunConfig(holdout=0.2).holdout == 0.2


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_folds": 1}, r"`n_folds` must be an integer >= 2; got 1"),
        ({"holdout": 1.5}, r"`holdout` must be a fraction in \[0, 1\); got 1.5"),
        ({"holdout": -0.1}, r"`holdout` must be a fraction in \[0, 1\); got -0.1"),
        ({"repeats": 0}, r"`repeats` must be an integer >= 1; got 0"),
        ({"time_limit": 0}, r"`time_limit` must be > 0 seconds; got 0"),
        ({"task": "ranking"}, r"`task` must be one of auto, binary"),
        ({"learners": ("lgbn",)}, r"unknown learner 'lgbn' \(did you mean 'lgbm'\?\)"),
        ({"fusions": ("avg",)}, r"unknown fusion 'avg'"),
        ({"metric": "auc"}, r"unknown metric 'auc' \(did you mean 'roc_auc'\?\)"),
        ({"learners": ()}, r"`learners` must name at least one learner"),
        ({"cpus_per_fit": 0}, r"`cpus_per_fit` must be an integer >= 1"),
    ],
)
def test_bad_values(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        RunConfig(**kwargs)


def test_all_problems_reported_at_once():
    with pytest.raises(ConfigError, match="n_folds.*; .*holdout"):
        RunConfig(n_folds=0, holdout=2.0)


def test_unknown_key_with_hint():
    with pytest.raises(
        ConfigError, match=r"unknown config key 'n_fold' \(did you mean 'n_folds'\?\)"
    ):
        RunConfig.from_dict({"n_fold": 3})


def test_yaml_then_flags_precedence(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(
        "data: a.csv\ntarget: y\nn_folds: 3\nlearners: [lgbm, linear]\nseed: 4\n"
    )
    c = resolve(p, {"seed": 9, "target": None})
    assert (c.data, c.target, c.n_folds, c.seed) == ("a.csv", "y", 3, 9)
    assert c.learners == ("lgbm", "linear")
    assert resolve(None, {"learners": "lgbm, rf"}).learners == ("lgbm", "rf")


def test_bad_yaml_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        resolve(tmp_path / "none.yaml")
    p = tmp_path / "bad.yaml"
    p.write_text("a: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        resolve(p)
    p.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        resolve(p)


def test_to_dict_roundtrip():
    c = RunConfig(data="x.csv", target="y", learner_params={"lgbm": {"num_leaves": 7}})
    assert RunConfig.from_dict(c.to_dict()) == c
