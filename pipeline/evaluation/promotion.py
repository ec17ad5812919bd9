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
from pipeline.metrics import METRIC_DIRECTION, beats

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


@dataclass(frozen=True)
class Champion:
    """The current champion as the rule sees it: its version, the means of the evaluation its
    promotion used, and that evaluation's test-split fingerprint."""

    version: str
    means: dict[str, float]
    fingerprint: str


def coconet_means(metrics: dict[str, Any], test_set: str) -> dict[str, float]:
    """The model's means on ``test_set`` from ``reports/metrics.json`` (``{test set: {metric:
    mean}}``); undefined (null) means are left out."""
    source = metrics.get(test_set)
    if not isinstance(source, dict):
        known = ", ".join(k for k, v in metrics.items() if isinstance(v, dict)) or "none"
        raise InputError(
            f"metrics.json has no means for test set {test_set!r} (register.test_set; "
            f"evaluated: {known})"
        )
    means = {
        k: float(v)
        for k, v in source.items()
        if k in METRIC_DIRECTION and isinstance(v, int | float) and not isinstance(v, bool)
    }
    if not means:
        raise InputError(f"metrics.json holds no means for test set {test_set!r}")
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
    ep = params.evaluate
    caps = ",".join(f"{k}:{v}" for k, v in sorted(ep.max_pairs_per_set.items()))
    lines.append(f"convention={ep.convention} max_pairs={ep.max_pairs}")
    if caps:  # absent when unset: fingerprints of earlier evaluations stay valid
        lines[-1] += f" caps={caps}"
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def decide(
    new_means: dict[str, float],
    new_fingerprint: str,
    champion: Champion | None,
    params: Params,
) -> Decision:
    """Apply the promotion rule against ``champion`` (None: there is none yet)."""
    rule = params.register_
    unknown = [m for m in rule.promote_metrics if m not in METRIC_DIRECTION]
    if unknown:
        raise InputError(f"register.promote_metrics: unknown metric(s) {unknown}")
    missing = [m for m in rule.promote_metrics if m not in new_means]
    if missing:
        raise InputError(f"metrics.json lacks promote metric(s) {missing}")
    if champion is None:
        return Decision(True, "first version: no champion yet")
    version, old_fp, old_means = champion.version, champion.fingerprint, champion.means
    if old_fp != new_fingerprint:
        return Decision(
            False,
            f"not comparable: champion v{version} was evaluated on test split "
            f"{old_fp[:12] or 'unknown'}, this version on {new_fingerprint[:12]}; "
            "champion kept (re-evaluate on one split, or move the alias by hand)",
            version,
        )
    absent = [m for m in rule.promote_metrics if m not in old_means]
    if absent:
        return Decision(
            False, f"not comparable: champion v{version} has no recorded {absent}", version
        )
    wins, details = 0, []
    for m in rule.promote_metrics:
        new, old = new_means[m], old_means[m]
        better = beats(m, new, old)
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
