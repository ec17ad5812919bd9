"""Score a fusion model on the validation pairs, never a test pair: how schedules are chosen.

Validation sets, all outside every test split (``data/raw/index.csv``):

* ``roadscene:val``: RoadScene's ``val`` split (every 20th pair from the 6th; never trained on,
  never tested): the model against the pixel average on the 12 metrics (how many it wins);
* ``tno40:authors``: the authors' released fusions of the tno40 pairs outside the test split
  (their scenes are trained on through ``tno_masked``, so this measures closeness to the
  authors' outputs, not generalisation): the model's mean of each of the paper's metrics (EN,
  SD, SF, AG, SCD, VIF) against the authors' on the same pairs;
* ``--extra NAME``: the validation pairs of a catalogue dataset outside ``download.datasets``,
  fetched into the download cache and checked by sha256 (through ``COCONET_MIRROR`` or
  ``--mirror``): wins over the average (``m3fd_val``: 30 M3FD pairs, none of them an m3fd test
  pair); where the dataset names a ``reference`` published set, the deviation from those
  released fusions too (``tno_authors``: the authors' fusions of 18 more TNO pairs, no image
  of them a near-duplicate of a test image);
* ``authors:all``, when more than one set has the authors' fusions: the deviation over all
  their pairs together.

The model's output contrast (``model.output_mean``/``output_sd``, applied at inference) can be
overridden to choose it without retraining::

    uv run python scripts/validate.py artifacts/model.pt [--output-mean 0.42 --output-sd 0.25]
        [--extra m3fd_val --extra tno_authors] [--json validation.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from models.contrast import OutputContrast
from pipeline.catalogue import load_dataset
from pipeline.catalogue.fetch import cache_dir, fetch_all, file_requests, resolve_mirror
from pipeline.catalogue.published import load_published
from pipeline.core.errors import EXPECTED_ERRORS
from pipeline.core.imageio import read_image, to_grey, to_uint8
from pipeline.core.params import PROJECT_ROOT
from pipeline.core.paths import ProjectPaths
from pipeline.core.placement import place
from pipeline.evaluation.baselines import average
from pipeline.fusion import fuse_arrays
from pipeline.inference import load_checkpoint_model
from pipeline.metrics import METRIC_NAMES, beats, compute_metrics, mean_metrics

PAPER_METRICS = ("EN", "SD", "SF", "AG", "SCD", "VIF")
VAL_SET, AUTHORS_SET, ALL_AUTHORS = "roadscene:val", "tno40:authors", "authors:all"


def validation_pairs(root: Path) -> dict[str, pd.DataFrame]:
    """The two validation sets (rows of the index; the authors' set with a ``published``
    column), without a single test pair."""
    paths = ProjectPaths(root)
    index = pd.read_csv(paths.index, dtype=str, keep_default_na=False)
    published = paths.published_index
    sets = {VAL_SET: index[index["split"] == "val"]}
    if published.is_file():
        fused = pd.read_csv(published, dtype=str, keep_default_na=False)
        fused = fused[fused["published"] == "coconet_authors"][["pair_id", "fused"]]
        rows = index[(index["split"] != "test") & (index["dataset"] == "tno40")]
        sets[AUTHORS_SET] = rows.merge(fused.rename(columns={"fused": "published"}), on="pair_id")
    return {name: rows.reset_index(drop=True) for name, rows in sets.items()}


def extra_pairs(name: str, root: Path, mirror: str | None = None) -> pd.DataFrame:
    """Rows (``pair_id``, absolute ``vis`` and ``ir``, and ``published`` where the dataset has a
    reference) of the ``val`` pairs of catalogue dataset ``name``, fetched into the download
    cache; no pair may be a test pair, nor share a file with a test pair of ``root``'s index
    (SystemExit naming them otherwise)."""
    dataset = load_dataset(name)
    pairs = dataset.pairs()
    tests = [pair for pair in pairs if dataset.split_of(pair) == "test"]
    if tests or dataset.split != "val":
        raise SystemExit(f"{name}: pairs {(tests or list(pairs))[:5]} are not validation pairs")
    pairs = {pair: files for pair, files in pairs.items() if dataset.split_of(pair) == "val"}
    index = pd.read_csv(ProjectPaths(root).index, dtype=str, keep_default_na=False)
    test = index[index["split"] == "test"]
    tested = {h for col in ("ir_sha256", "vis_sha256") if col in test for h in test[col]}
    shared = sorted(f.url for f in dataset.files if f.sha256 in tested)
    if shared:
        raise SystemExit(f"{name}: files that are also test pairs' files: {shared[:3]}")
    files = [f for roles in pairs.values() for f in roles.values()]
    released = {}
    if dataset.reference:
        by_name = {f.result: f for f in load_published(dataset.reference).files}
        missing = sorted(set(pairs) - set(by_name))
        if missing:
            raise SystemExit(f"{name}: no {dataset.reference} result for pairs {missing[:5]}")
        released = {pair: by_name[pair] for pair in pairs}
    requests = file_requests([*files, *released.values()])
    cached = fetch_all(requests, cache_dir(), mirror, desc=name)
    rows = []
    for pair, roles in pairs.items():
        row = {"pair_id": f"{name}/{pair}"}
        row |= {r: cached[roles[r].key].resolve() for r in ("vis", "ir")}
        if pair in released:
            row["published"] = cached[released[pair].key].resolve()
        rows.append(row)
    return pd.DataFrame(rows, columns=["pair_id", "vis", "ir", *(["published"] * bool(released))])


def wins(model: dict[str, float], baseline: dict[str, float]) -> list[str]:
    """The metrics on which ``model`` beats ``baseline`` (Nabf: lower is better)."""
    return [m for m in METRIC_NAMES if beats(m, model[m], baseline[m])]


def validate(
    model_path: Path,
    root: Path,
    contrast: OutputContrast | None | bool = False,
    extra: tuple[str, ...] = (),
    mirror: str | None = None,
) -> dict[str, dict]:
    """Means per validation set and method (the model, the pixel average, the authors where
    they exist), the model's wins over the average, and its deviation from the authors.
    ``contrast``: False keeps the model's own output contrast; None or a value replaces it.
    ``extra``: catalogue datasets of validation pairs (:func:`extra_pairs`) to score too."""
    sets = validation_pairs(root) | {name: extra_pairs(name, root, mirror) for name in extra}
    model = load_checkpoint_model(model_path)
    if contrast is not False:
        model.output_contrast = contrast
    placement = place("cpu", "auto")
    scored: dict[str, dict[str, list[dict[str, float]]]] = {}  # set -> method -> per pair
    for name, rows in sets.items():
        scores = scored[name] = {}
        for row in rows.itertuples(index=False):
            vis, ir = (to_grey(read_image(root / p)) for p in (row.vis, row.ir))
            ir8, vis8 = to_uint8(ir), to_uint8(vis)
            fused = {"model": fuse_arrays(model, vis, ir, placement), "average": average(vis, ir)}
            if "published" in rows:
                fused["authors"] = to_grey(read_image(root / row.published))
            for method, image in fused.items():
                scores.setdefault(method, []).append(compute_metrics(ir8, vis8, to_uint8(image)))
    result = {name: _entry(scores) for name, scores in scored.items()}
    released = [scores for scores in scored.values() if "authors" in scores]
    if len(released) > 1:
        pooled = {m: [row for scores in released for row in scores[m]] for m in released[0]}
        result[ALL_AUTHORS] = _entry(pooled)
    return result


def _entry(scores: dict[str, list[dict[str, float]]]) -> dict:
    """A set's pair count, means per method, the model's wins over the average and, where the
    authors' fusions exist, its deviation from them on the paper's metrics and their wins."""
    means = {method: mean_metrics(rows) for method, rows in scores.items()}
    entry = {"pairs": len(scores["model"]), "means": means}
    entry["wins"] = wins(means["model"], means["average"])
    if "authors" in means:  # and how often the authors' own fusions beat the average
        entry["deviation"] = {m: means["model"][m] / means["authors"][m] - 1 for m in PAPER_METRICS}
        entry["authors_wins"] = wins(means["authors"], means["average"])
    return entry


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="a model file (artifacts/model.pt)")
    parser.add_argument("--output-mean", type=float, help="override model.output_mean (0..1)")
    parser.add_argument("--output-sd", type=float, help="override model.output_sd (0..1)")
    parser.add_argument("--none", action="store_true", help="no output contrast at all")
    parser.add_argument(
        "--extra",
        action="append",
        default=[],
        metavar="NAME",
        help="also score this catalogue dataset's validation pairs (m3fd_val, tno_authors)",
    )
    parser.add_argument("--mirror", help="read --extra files from this mirror (COCONET_MIRROR)")
    parser.add_argument("--json", type=Path, help="also write the result here")
    parser.add_argument("--root", type=Path, default=PROJECT_ROOT, help="the project folder")
    args = parser.parse_args(argv)
    if (args.output_mean is None) != (args.output_sd is None):
        parser.error("--output-mean and --output-sd go together")
    contrast: OutputContrast | None | bool = False
    if args.none:
        contrast = None
    elif args.output_mean is not None:
        contrast = OutputContrast(args.output_mean, args.output_sd)
    mirror = args.mirror or resolve_mirror()
    try:
        result = validate(args.model, args.root, contrast, tuple(args.extra), mirror)
    except EXPECTED_ERRORS as exc:  # a file missing from the mirror, a bad model file ...
        raise SystemExit(f"error: {exc}") from exc
    for name, entry in result.items():
        table = pd.DataFrame(entry["means"]).T[METRIC_NAMES]
        print(f"== {name} ({entry['pairs']} pairs)\n{table.to_string(float_format='%.4g')}")
        print(f"model beats the pixel average on {len(entry['wins'])} of 12: {entry['wins']}")
        if "authors_wins" in entry:
            print(f"the authors beat it on {len(entry['authors_wins'])}: {entry['authors_wins']}")
        if "deviation" in entry:
            dev = ", ".join(f"{m} {v:+.1%}" for m, v in entry["deviation"].items())
            print(f"model vs the authors: {dev}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
