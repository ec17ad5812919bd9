"""A registered version's tags: the lineage stages only, the decision with or without a champion,
and recorded hashes read back from today's JSON tag and from the per-path tags of older versions.
(The register stage writing them to a store is in tests/pipeline/stages/test_register.py.)"""

from __future__ import annotations

import json

import yaml

from pipeline.core.params import Params
from pipeline.evaluation.promotion import Decision
from pipeline.tracking.version_tags import decision_tags, lineage_tags, recorded_hashes

ROWS = [
    {"dataset": "tno40", "split": "test"},
    {"dataset": "roadscene", "split": "train"},
    {"dataset": "roadscene", "split": "val"},
    {"dataset": "roadscene", "split": "train"},
]


def _lock(path, stages: dict[str, dict[str, str]]):
    lock = {"schema": "2.0", "stages": {
        name: {"cmd": "python -m x", "outs": [{"path": p, "md5": m} for p, m in outs.items()]}
        for name, outs in stages.items()
    }}  # fmt: skip
    path.write_text(yaml.safe_dump(lock))
    return path


def test_lineage_tags_keep_only_the_stages_up_to_evaluate(tmp_path):
    lock = _lock(tmp_path / "dvc.lock", {
        "download": {"data/raw": "a" * 32 + ".dir"},
        "train": {"artifacts/model.pt": "b" * 32},
        "register": {"artifacts/registered.json": "c" * 32},  # after evaluate: not lineage
    })  # fmt: skip
    params = Params()
    tags = lineage_tags(params, ROWS, lock, "run123", "fp456")
    assert tags["eval.run_id"] == "run123" and tags["eval.test_fingerprint"] == "fp456"
    assert tags["params.sha256"] == params.digest()
    assert json.loads(tags["dvc.lock"]) == {
        "download": {"data/raw": "a" * 32 + ".dir"},
        "train": {"artifacts/model.pt": "b" * 32},
    }
    assert json.loads(tags["data.pairs"]) == {
        "roadscene": {"train": 2, "val": 1},
        "tno40": {"test": 1},
    }
    assert all(isinstance(v, str) for v in tags.values())  # MLflow tags are strings


def test_no_dvc_lock_yet_gives_empty_hashes(tmp_path):
    tags = lineage_tags(Params(), ROWS, tmp_path / "dvc.lock", "r", "f")
    assert json.loads(tags["dvc.lock"]) == {}


def test_decision_tags_name_the_champion_only_when_there_was_one():
    first = decision_tags(Decision(True, "first version"))
    assert first == {"promotion.decision": "champion", "promotion.reason": "first version"}
    later = decision_tags(Decision(False, "VIF lower", compared_to="3"))
    assert later == {
        "promotion.decision": "challenger",
        "promotion.reason": "VIF lower",
        "promotion.compared_to": "3",
    }


def test_recorded_hashes_round_trip_and_read_old_per_path_tags(tmp_path):
    stages = {"patches": {"data/patches.h5": "c" * 32}, "masks": {"data/masks": "d" * 32}}
    tags = lineage_tags(Params(), ROWS, _lock(tmp_path / "dvc.lock", stages), "r", "f")
    assert recorded_hashes(tags) == stages
    old = {  # a version registered before the one JSON tag
        "dvc.train.artifacts/model.pt": "e" * 32,
        "dvc.patches.data/patches.h5": "c" * 32,
        "promotion.decision": "champion",
    }
    assert recorded_hashes(old) == {
        "patches": {"data/patches.h5": "c" * 32},
        "train": {"artifacts/model.pt": "e" * 32},
    }
    assert recorded_hashes({"promotion.decision": "champion"}) == {}
