"""The promotion rule (pipeline.evaluation.promotion): who takes the champion alias."""

from __future__ import annotations

import pytest

from pipeline.catalogue.index import dataset_counts, read_index
from pipeline.core.params import Params
from pipeline.evaluation.promotion import (
    Champion,
    coconet_means,
    decide,
    evaluation_fingerprint,
)
from tests.helpers.registry import make_project

PARAMS = Params.model_validate(
    {"model": {"vgg_weights": "random"}, "register": {"promote_metrics": ["VIF", "Qabf", "Nabf"]}}
)
GOOD = {"VIF": 0.6, "Qabf": 0.5, "Nabf": 0.02, "SSIM": 0.7}


def champion(version: str, means: dict[str, float], fingerprint: str = "fp") -> Champion:
    return Champion(version, dict(means), fingerprint)


def test_first_version_becomes_champion():
    decision = decide(GOOD, "fp", None, PARAMS)
    assert decision.promote and decision.alias == "champion"
    assert "first version" in decision.reason


def test_wins_counted_in_each_metric_direction():
    # Nabf is lower-is-better: 0.01 < 0.02 wins; VIF wins; Qabf loses -> 2 of 3 >= min_wins 2
    new = {"VIF": 0.7, "Qabf": 0.4, "Nabf": 0.01}
    decision = decide(new, "fp", champion("3", GOOD), PARAMS)
    assert decision.promote, decision.reason
    assert decision.compared_to == "3" and "2/3" in decision.reason
    # higher Nabf is worse: only VIF wins
    worse = {"VIF": 0.7, "Qabf": 0.4, "Nabf": 0.03}
    decision = decide(worse, "fp", champion("3", GOOD), PARAMS)
    assert not decision.promote and decision.alias == "challenger"
    assert "does not beat champion v3 on 1/3" in decision.reason


def test_ties_do_not_win():
    decision = decide(dict(GOOD), "fp", champion("1", GOOD), PARAMS)
    assert not decision.promote and "0/3" in decision.reason


def test_different_test_split_is_not_comparable():
    better = {k: v * 2 if k != "Nabf" else v / 2 for k, v in GOOD.items()}
    decision = decide(better, "fp-new", champion("2", GOOD, "fp-old"), PARAMS)
    assert not decision.promote
    assert decision.reason.startswith("not comparable") and "champion v2" in decision.reason


def test_bad_rule_is_an_error():
    bad = Params.model_validate({"register": {"promote_metrics": ["VIF", "nonsense"]}})
    with pytest.raises(ValueError, match="unknown metric"):
        decide(GOOD, "fp", None, bad)
    with pytest.raises(ValueError, match="lacks promote metric"):
        decide({"VIF": 1.0}, "fp", None, PARAMS)


def test_metrics_json_means_of_the_rule_s_test_set():
    layout = {"tno40": {"VIF": 1, "SSIM": None, "other": 3}, "m3fd": {"VIF": 2.0}}
    assert coconet_means(layout, "tno40") == {"VIF": 1.0}
    assert coconet_means(layout, "m3fd") == {"VIF": 2.0}
    with pytest.raises(ValueError, match="no means for test set 'roadscene'.*tno40, m3fd"):
        coconet_means(layout, "roadscene")
    with pytest.raises(ValueError, match="no means"):
        coconet_means({"tno40": {"n": 1}}, "tno40")


def test_fingerprint_follows_test_pairs_and_protocol(tmp_path):
    rows = read_index(make_project(tmp_path / "a", GOOD) / "data/raw/index.csv")
    base = evaluation_fingerprint(rows, PARAMS)
    train_changed = [dict(r, vis_sha256="x") if r["split"] == "train" else r for r in rows]
    assert evaluation_fingerprint(train_changed, PARAMS) == base
    test_changed = [dict(r, ir_sha256="x") if r["split"] == "test" else r for r in rows]
    assert evaluation_fingerprint(test_changed, PARAMS) != base
    other = PARAMS.model_copy(
        update={"evaluate": PARAMS.evaluate.model_copy(update={"convention": "cddfuse"})}
    )
    assert evaluation_fingerprint(rows, other) != base
    assert dataset_counts(rows) == {"tno40": {"test": 3}, "tno_masked": {"train": 2}}
