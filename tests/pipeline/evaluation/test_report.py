"""The evaluation report's parts: numbers too small or large for fixed decimals stay visible, a
metric no method has is a dash, the report holds its sections, and a gallery is a PNG of one row
of panels. (Ranks and bolding are in tests/pipeline/stages/test_evaluate.py.)"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from pipeline.evaluation.report import ranking_table, write_gallery, write_report

DIRECTION = {"Nabf": "lower", "VIF": "higher"}


def test_tiny_and_huge_values_are_written_in_scientific_form():
    means = {"a": {"Nabf": 0.00002, "VIF": 12345.0}, "b": {"Nabf": 0.5, "VIF": 0.0}}
    rows = ranking_table(means, DIRECTION).splitlines()
    assert rows[2] == "| a | **2.00e-05** | **1.23e+04** | **1.00** |"
    assert rows[3] == "| b | 0.5000 | 0.0000 | 2.00 |"  # zero stays fixed


def test_a_metric_nan_for_every_method_is_a_dash_and_ranks_on_the_others():
    means = {"a": {"Nabf": math.nan, "VIF": 0.4}, "b": {"Nabf": math.nan, "VIF": 0.6}}
    rows = ranking_table(means, DIRECTION).splitlines()
    assert rows[2] == "| b | – | **0.6000** | **1.00** |"
    assert rows[3] == "| a | – | 0.4000 | 2.00 |"


def test_report_holds_context_a_table_per_test_set_notes_times_and_gallery(tmp_path):
    means = {
        "tno40": {"CoCoNet": {"Nabf": 0.01, "VIF": 0.7}},
        "roadscene": {"CoCoNet": {"Nabf": 0.02, "VIF": 0.6}},
    }
    path = write_report(
        tmp_path / "evaluation" / "report.md",
        means,
        DIRECTION,
        {"model": "models:/coconet/3"},
        gallery=["gallery/kayak.png"],
        seconds={"CoCoNet": 0.12345},
        notes={"roadscene": ["2 pairs skipped"]},
    )
    text = path.read_text()
    assert text.startswith("# Evaluation\n\n- **model**: models:/coconet/3\n")
    assert text.index("## Ranking on tno40") < text.index("## Ranking on roadscene")
    assert "| Method | Nabf ↓ | VIF ↑ | mean rank ↓ |" in text
    assert text.index("## Ranking on roadscene") < text.index("- 2 pairs skipped")
    assert "| CoCoNet | 0.123 |" in text and "![kayak](gallery/kayak.png)" in text
    bare = write_report(tmp_path / "bare.md", means, DIRECTION, {}).read_text()
    assert "## Time per image" not in bare and "## Gallery" not in bare


def test_gallery_is_one_row_png_of_grey_and_colour_panels(tmp_path):
    rng = np.random.default_rng(0)
    panels = [
        ("infrared", rng.random((37, 53))),
        ("visible", rng.random((37, 53, 3))),
        ("fused", rng.random((37, 53)) * 2 - 0.5),  # out of range: clipped, not an error
    ]
    path = write_gallery(tmp_path / "gallery" / "p1.png", "tno40/p1", panels, panel_inches=2)
    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = image.size
    assert width == 3 * 2 * 100 and width > height  # 100 dpi, one row of three panels
    assert [p.name for p in path.parent.iterdir()] == ["p1.png"]  # no temporary left
