"""Inbox pairs checked one by one (flows.inbox.validation)."""

from __future__ import annotations

import numpy as np

from flows.inbox.validation import scan_inbox
from pipeline.core.imageio import write_image
from tests.helpers.dvc_project import write_pair


def test_inbox_scan_accepts_good_pairs_and_explains_rejections(tmp_path):
    inbox = tmp_path / "inbox"
    write_pair(inbox / "good")
    write_pair(inbox / "bmp_pair", ext=".bmp")
    write_pair(inbox / "sizes", vis_size=(6, 9))
    (inbox / "novis").mkdir()
    write_image(inbox / "novis/ir.png", np.zeros((4, 4), np.float32))
    (inbox / "broken").mkdir()
    (inbox / "broken/ir.png").write_bytes(b"not an image")
    (inbox / "broken/vis.png").write_bytes(b"not an image")
    write_pair(inbox / "bad name!")
    (inbox / "stray.png").write_bytes(b"x")
    pairs, rejected = scan_inbox(inbox)
    assert [p.name for p in pairs] == ["bmp_pair", "good"]
    assert set(pairs[1].files) == {"ir", "vis"} and len(pairs[1].sha256["ir"]) == 64
    assert "sizes differ" in rejected["sizes"]
    assert "missing vis" in rejected["novis"]
    assert "ir.png" in rejected["broken"]
    assert "folder name" in rejected["bad name!"]
    assert "not a folder" in rejected["stray.png"]
    assert scan_inbox(tmp_path / "absent") == ([], {})
