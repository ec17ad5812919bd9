"""The promotion rule: does a newly registered version take the ``champion`` alias?

The first version becomes ``champion``. A later version takes it only if it was evaluated on the
same test split (same fingerprint: sorted test pair ids and their image sha256s, plus the metric
convention and pair limit) and beats the champion on at least ``register.min_wins`` of
``register.promote_metrics`` (strictly better means, in each metric's direction). Otherwise it
becomes ``challenger``; a version evaluated on a different split cannot be compared, so it is a
challenger whatever its scores, and the reason says so.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from pipeline.core.errors import InputError
from pipeline.core.params import Params
from pipeline.metrics import METRIC_DIRECTION

CHAMPION, CHALLENGER = "champion", "challenger"
FINGERPRINT_TAG = "eval.evaluation_fingerprint"


@dataclass(frozen=True)
class Decision:
    """Outcome of the promotion rule for one new version."""

    promote: bool
    reason: str
    compared_to: str = ""  # champion version compared against ("" if none)

    @property
    def alias(self) -> str:
        return CHAMPION if self.promote else CHALLENGER


def coconet_means(metrics: dict[str, Any]) -> dict[str, float]:
    """CoCoNet's mean metrics from ``reports/metrics.json``: the known metric names at top
    level (or under a ``coconet`` key); baselines, counts and undefined (null) means ignored."""
    source = metrics.get("coconet", metrics)
    if isinstance(source, dict) and isinstance(source.get("mean"), dict):
        source = source["mean"]
    means = {
        k: float(v)
        for k, v in source.items()
        if k in METRIC_DIRECTION and isinstance(v, int | float) and not isinstance(v, bool)
    }
    if not means:
        raise InputError("metrics.json holds no CoCoNet mean metrics")
    return means


def evaluation_fingerprint(rows: list[dict[str, str]], params: Params) -> str:
    """sha256 over the sorted test pairs (id + image sha256s) and the evaluation protocol
    (metric convention, pair limit): equal fingerprints mean comparable evaluation means."""
    test = sorted(
        (r["pair_id"], r.get("ir_sha256", ""), r.get("vis_sha256", ""))
        for r in rows
        if r["split"] == "test"
    )
    lines = [" ".join(t) for t in test]
    lines.append(f"convention={params.evaluate.convention} max_pairs={params.evaluate.max_pairs}")
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def champion_means(tags: dict[str, str]) -> dict[str, float]:
    """The evaluation means recorded on a version's ``eval.<metric>`` tags."""
    out = {}
    for key, value in tags.items():
        if key.startswith("eval.") and key.count(".") == 1:
            try:
                out[key.removeprefix("eval.")] = float(value)
            except ValueError:
                continue
    return out


def decide(
    new_means: dict[str, float],
    new_fingerprint: str,
    champion: tuple[str, dict[str, str]] | None,
    params: Params,
) -> Decision:
    """Apply the promotion rule; ``champion`` is (version, its tags) or None."""
    rule = params.register_
    unknown = [m for m in rule.promote_metrics if m not in METRIC_DIRECTION]
    if unknown:
        raise InputError(f"register.promote_metrics: unknown metric(s) {unknown}")
    missing = [m for m in rule.promote_metrics if m not in new_means]
    if missing:
        raise InputError(f"metrics.json lacks promote metric(s) {missing}")
    if champion is None:
        return Decision(True, "first version: no champion yet")
    version, tags = champion
    old_fp = tags.get(FINGERPRINT_TAG, "")
    if old_fp != new_fingerprint:
        return Decision(
            False,
            f"not comparable: champion v{version} was evaluated on test split "
            f"{old_fp[:12] or 'unknown'}, this version on {new_fingerprint[:12]}; "
            "champion kept (re-evaluate on one split, or move the alias by hand)",
            version,
        )
    old_means = champion_means(tags)
    absent = [m for m in rule.promote_metrics if m not in old_means]
    if absent:
        return Decision(
            False, f"not comparable: champion v{version} has no recorded {absent}", version
        )
    wins, details = 0, []
    for m in rule.promote_metrics:
        new, old = new_means[m], old_means[m]
        better = new > old if METRIC_DIRECTION[m] == "higher" else new < old
        wins += better
        sign = ">" if new > old else "<" if new < old else "="
        details.append(f"{m} {new:.6g} {sign} {old:.6g}{'' if better else ' (no win)'}")
    need = min(rule.min_wins, len(rule.promote_metrics))
    verdict = "beats" if wins >= need else "does not beat"
    reason = (
        f"{verdict} champion v{version} on {wins}/{len(rule.promote_metrics)} metrics "
        f"(needs {need}): " + "; ".join(details)
    )
    return Decision(wins >= need, reason, version)
