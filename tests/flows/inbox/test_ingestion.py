"""Ingesting inbox pairs into the catalogue's ``inbox`` dataset, and undoing it
(flows.inbox.ingestion)."""

from __future__ import annotations

import yaml

from flows.inbox.ingestion import ingest, plan, read_catalogue, rollback
from flows.inbox.validation import scan_inbox
from flows.overrides import compose_params
from pipeline.core.params import load_params
from tests.helpers.dvc_project import write_pair


def test_ingest_tracks_pairs_with_dvc_and_rollback_restores(tiny):
    inbox = tiny / "inbox"
    pairs, _ = scan_inbox(write_pair(inbox / "n1").parent)
    params_before = (tiny / "params.yaml").read_text()
    conf_before = (tiny / "conf/config.yaml").read_text()
    snapshot = ingest(pairs, tiny)
    rows = read_catalogue(tiny)
    assert [(r.pair, r.role, r.url) for r in rows] == [
        ("n1", "ir", "incoming/n1/ir.png"),
        ("n1", "vis", "incoming/n1/vis.png"),
    ]
    assert rows[0].sha256 == pairs[0].sha256["ir"]
    assert (tiny / "incoming/n1/ir.png").read_bytes() == (inbox / "n1/ir.png").read_bytes()
    assert "inbox" in load_params(tiny / "params.yaml").download.datasets
    conf_after = (tiny / "conf/config.yaml").read_text()
    assert ", inbox]" in conf_after and "# The source of params.yaml" in conf_after
    compose_params(tiny, ["schedule=quick"])  # dvc exp run -S recomposes: the data stays
    assert "inbox" in load_params(tiny / "params.yaml").download.datasets
    assert yaml.safe_load((tiny / "incoming.dvc").read_text())["outs"][0]["path"] == "incoming"
    assert "local: true" in (tiny / "pipeline/catalogue/datasets/inbox.yaml").read_text()
    new, dup, conflicts = plan(pairs, tiny)
    assert (new, [p.name for p in dup], conflicts) == ([], ["n1"], {})
    rollback(snapshot)
    assert (tiny / "params.yaml").read_text() == params_before
    assert (tiny / "conf/config.yaml").read_text() == conf_before
    assert not (tiny / "incoming/n1").exists() and not (tiny / "incoming.dvc").exists()
    assert read_catalogue(tiny) == ()
    assert not (tiny / ".gitignore").exists()  # written by `dvc add incoming`, undone too
    assert (inbox / "n1/ir.png").is_file()  # the inbox is never touched by ingest/rollback
