"""Lineage audit: model version -> MLflow run -> DVC hashes -> datasets, pairs and masks.

Everything shown comes from what the register stage recorded in MLflow (version and run tags,
``lineage/*.csv`` artifacts of the run), so a model whose local inputs were deleted still shows
its lineage. ``render`` prints a one-screen summary of the chain (``pairs=True`` adds the
per-pair URLs and sha256s). ``verify`` re-hashes the bytes of the local files the way DVC
does (md5; ``.dir`` hashes for folders), never trusting DVC's mtime-keyed state cache, and
compares them with the recorded md5s.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import tempfile
import textwrap
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dvc.ignore import DvcIgnoreFilter
from dvc_objects.fs.local import LocalFileSystem
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from tqdm import tqdm

from pipeline.core.errors import CoconetError
from pipeline.core.params import PROJECT_ROOT, ParamsError, load_params
from pipeline.metrics import METRIC_DIRECTION
from pipeline.tracking import experiment as tracking
from pipeline.tracking import names
from pipeline.tracking.dvc_lock import stage_out_hashes
from pipeline.tracking.version_tags import recorded_hashes

DEFAULT_TARGET = "models:/coconet@champion"
HASH_CHUNK = 1 << 22
PROGRESS_BYTES = 64 << 20


class LineageError(CoconetError, ValueError):
    """The model or run to audit does not exist or holds no lineage."""


def _parse_model_uri(uri: str) -> tuple[str, str | None, str | None]:
    """``models:/name@alias`` -> (name, alias, None); ``models:/name/3`` -> (name, None, "3")."""
    rest = uri.removeprefix("models:/").strip("/")
    if "@" in rest:
        name, alias = rest.split("@", 1)
        return name, alias, None
    if "/" in rest:
        name, version = rest.rsplit("/", 1)
        return name, None, version
    raise LineageError(f"{uri}: expected models:/<name>@<alias> or models:/<name>/<version>")


def _version_info(mv: Any) -> dict[str, Any]:
    return {
        "name": mv.name,
        "version": str(mv.version),
        "aliases": list(mv.aliases or []),
        "source": mv.source,
        "created": _iso(mv.creation_timestamp),
        "description": mv.description or "",
        "decision": mv.tags.get(names.DECISION, ""),
        "reason": mv.tags.get(names.REASON, ""),
    }


def _iso(ms: int | None) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds") if ms else ""


def _read_artifact_csv(client: Any, run_id: str, name: str) -> list[dict[str, str]] | None:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(run_id, f"lineage/{name}", tmp)
        except (MlflowException, OSError):
            return None
        return list(csv.DictReader(io.StringIO(Path(path).read_text())))


def _datasets(raw: list[dict[str, str]], masks: list[dict[str, str]] | None) -> list[dict]:
    methods = {r["pair_id"]: r.get("method", "") for r in masks or []}
    out: dict[str, dict[str, Any]] = {}
    for row in raw:
        entry = out.setdefault(row["dataset"], {"name": row["dataset"], "splits": {}, "pairs": []})
        entry["splits"][row["split"]] = entry["splits"].get(row["split"], 0) + 1
        pair = {k: row.get(k, "") for k in ("pair_id", "split", "width", "height")}
        for role in ("ir", "vis", "mask"):
            pair[f"{role}_url"] = row.get(f"{role}_url", "")
            pair[f"{role}_sha256"] = row.get(f"{role}_sha256", "")
        pair["mask_method"] = methods.get(row["pair_id"], "")
        entry["pairs"].append(pair)
    return list(out.values())


def _evaluation(client: MlflowClient, tags: dict[str, str]) -> dict[str, Any] | None:
    """The evaluation the version's promotion used: its run and the model's means per test
    set (``eval.<metric>`` tags of versions registered before evaluations had runs)."""
    run_id = tags.get(names.EVAL_RUN)
    if not run_id:
        legacy = {m: float(tags[f"eval.{m}"]) for m in METRIC_DIRECTION if f"eval.{m}" in tags}
        return {"run_id": "", "status": "", "means": {"test": legacy}} if legacy else None
    run = client.get_run(run_id)
    means: dict[str, dict[str, float]] = {}
    for key, value in run.data.metrics.items():
        parts = key.split("/")  # eval/<test set>/<method>/<metric>
        if len(parts) == 4 and parts[0] == "eval" and parts[2] == "CoCoNet":
            means.setdefault(parts[1], {})[parts[3]] = value
    ordered = {
        test_set: {m: values[m] for m in METRIC_DIRECTION if m in values}
        for test_set, values in sorted(means.items())
    }
    return {"run_id": run_id, "status": run.info.status, "means": ordered}


def collect(target: str = DEFAULT_TARGET, tracking_uri: str | None = None) -> dict[str, Any]:
    """The recorded lineage of a model URI or a run id, as a JSON-able dict."""
    client = MlflowClient(tracking_uri)
    version = None
    try:
        if target.startswith("models:/"):
            name, alias, number = _parse_model_uri(target)
            mv = (
                client.get_model_version_by_alias(name, alias)
                if alias
                else client.get_model_version(name, number)
            )
            version = _version_info(mv)
            run_id, tags = mv.run_id, dict(mv.tags)
            run = client.get_run(run_id)
        else:
            run = client.get_run(target)
            run_id, tags = target, dict(run.data.tags)
            found = client.search_model_versions(f"run_id = '{run_id}'")
            if found:
                mv = max(found, key=lambda v: int(v.version))
                version, tags = _version_info(mv), {**tags, **mv.tags}
        evaluation = _evaluation(client, tags) if version else None
    except MlflowException as exc:
        raise LineageError(f"{target}: {exc.message}") from exc
    raw = _read_artifact_csv(client, run_id, "raw_index.csv")
    masks = _read_artifact_csv(client, run_id, "masks_index.csv")
    run_tags = run.data.tags
    return {
        "target": target,
        "model": version,
        "run": {
            "run_id": run_id,
            "experiment_id": run.info.experiment_id,
            "status": run.info.status
            + (" (deleted)" if run.info.lifecycle_stage == "deleted" else ""),
            "start_time": _iso(run.info.start_time),
            "end_time": _iso(run.info.end_time),
            "git_commit": run_tags.get(names.GIT_COMMIT, ""),
            "git_dirty": run_tags.get(names.GIT_DIRTY, ""),
            "params": dict(sorted(run.data.params.items())),
            "metrics": dict(sorted(run.data.metrics.items())),
        },
        "params_digest": tags.get(names.PARAMS_DIGEST) or tags.get("params.digest", ""),
        "vgg_weights": run.data.params.get("model.vgg_weights", ""),
        "test_fingerprint": tags.get(names.EVAL_SPLIT_FINGERPRINT, ""),
        "evaluation": evaluation,
        "dvc": recorded_hashes(tags) if version else {},
        "datasets": _datasets(raw, masks) if raw is not None else None,
    }


def _files(path: Path, root: Path) -> list[Path]:
    """The files DVC hashes under ``path``: ``.dvcignore`` rules (and .git/.dvc) applied."""
    fs = LocalFileSystem()
    ignore = DvcIgnoreFilter(fs, str(root))
    found = []
    for folder, _, files in ignore.walk(fs, str(path)):
        found += [Path(folder) / name for name in files]
    return found


def _md5(path: Path, bar: Any) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()


def local_md5(root: Path, paths: list[str]) -> dict[str, str | None]:
    """DVC's md5 of each path under ``root``, from the bytes (never DVC's mtime-keyed state
    cache); None if missing. A file's is the md5 of its bytes; a directory's is DVC's ``.dir``
    hash: the md5 of the JSON list of ``{"md5", "relpath"}`` entries sorted by relpath. A
    progress bar (stderr, terminals only) shows on runs over 64 MB."""
    root = Path(root).resolve()
    files: dict[str, list[Path] | None] = {}
    for rel in paths:
        full = root / rel
        files[rel] = [full] if full.is_file() else _files(full, root) if full.is_dir() else None
    total = sum(f.stat().st_size for group in files.values() for f in group or [])
    quiet = True if total < PROGRESS_BYTES else None  # None: only on a terminal
    out: dict[str, str | None] = {}
    with tqdm(total=total, unit="B", unit_scale=True, desc="verify", disable=quiet) as bar:
        for rel, group in files.items():
            full = root / rel
            if group is None:
                out[rel] = None
            elif full.is_file():
                out[rel] = _md5(full, bar)
            else:
                entries = [
                    {"md5": _md5(f, bar), "relpath": f.relative_to(full).as_posix()} for f in group
                ]
                entries.sort(key=lambda e: e["relpath"])
                listing = json.dumps(entries, sort_keys=True).encode()
                out[rel] = hashlib.md5(listing).hexdigest() + ".dir"
    return out


def verify(lineage: dict[str, Any], root: Path = PROJECT_ROOT) -> list[dict[str, Any]]:
    """Compare the recorded hashes with the local files' bytes and with the local ``dvc.lock``
    (which ``dvc checkout`` trusts), and the params digest with ``params.yaml``: one check per
    item, ``ok`` False on drift."""
    recorded = {p: md5 for outs in lineage["dvc"].values() for p, md5 in outs.items()}
    checks = []
    for path, current in local_md5(root, sorted(recorded)).items():
        state = "ok" if current == recorded[path] else "missing" if current is None else "changed"
        checks.append(
            {"item": path, "recorded": recorded[path], "local": current, "ok": state == "ok"}
        )
    locked = {
        p: md5 for outs in stage_out_hashes(root / "dvc.lock").values() for p, md5 in outs.items()
    }
    for path in sorted(recorded):
        current = locked.get(path)
        checks.append(
            {
                "item": f"dvc.lock {path}",
                "recorded": recorded[path],
                "local": current,
                "ok": current == recorded[path],
            }
        )
    if lineage.get("params_digest"):
        try:
            digest = load_params(root / "params.yaml").digest()
        except ParamsError:
            digest = None
        checks.append(
            {
                "item": "params.yaml",
                "recorded": lineage["params_digest"],
                "local": digest,
                "ok": digest == lineage["params_digest"],
            }
        )
    return checks


def _short(md5: str) -> str:
    """First 8 hex digits of a DVC md5, keeping the ``.dir`` suffix of directories."""
    return md5[:8] + (".dir" if md5.endswith(".dir") else "")


def _mask_methods(ds: dict[str, Any]) -> str:
    counts: dict[str, int] = {}
    for p in ds["pairs"]:
        if p["mask_method"]:
            counts[p["mask_method"]] = counts.get(p["mask_method"], 0) + 1
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return ", ".join(f"{m} {n}" for m, n in ranked) or "none"


def _splits(ds: dict[str, Any]) -> str:
    return ", ".join(f"{n} {s}" for s, n in sorted(ds["splits"].items()))


def _summary_lines(lineage: dict[str, Any]) -> list[str]:
    """The chain at a glance: one line (or a few) per link, no per-pair detail."""
    lines: list[str] = []
    model = lineage["model"]
    if model:
        aliases = ", ".join(model["aliases"]) or "none"
        lines += [
            f"model    {model['name']} v{model['version']} (aliases: {aliases}), "
            f"registered {model['created']}",
            f"         decision: {model['decision'] or '?'}: {model['reason']}",
        ]
    else:
        lines.append("model    (no registered version for this run)")
    run = lineage["run"]
    lines += [
        f"run      {run['run_id']} (experiment {run['experiment_id']}, {run['status']}), "
        f"started {run['start_time']}",
        f"git      commit {run['git_commit'] or '?'}"
        + (" (uncommitted changes)" if run["git_dirty"] == "true" else ""),
        f"params   digest {lineage['params_digest'] or '?'}",
        f"weights  VGG {lineage['vgg_weights'] or '?'}",
    ]
    if lineage["dvc"]:
        lines.append("dvc.lock (md5, first 8 hex digits)")
        for stage, outs in lineage["dvc"].items():
            hashes = ", ".join(f"{path} {_short(md5)}" for path, md5 in outs.items())
            lines.append(f"         {stage:<9} {hashes}")
    else:
        lines.append("dvc.lock (no hashes recorded)")
    if lineage["datasets"] is None:
        lines.append("datasets (no data index recorded with this run)")
    for i, ds in enumerate(lineage["datasets"] or []):
        label = "datasets" if i == 0 else ""
        lines.append(f"{label:<8} {ds['name']}: {_splits(ds)}; masks: {_mask_methods(ds)}")
    evaluation = lineage["evaluation"]
    if evaluation:
        if evaluation["run_id"]:
            lines.append(f"eval     run {evaluation['run_id']} ({evaluation['status']})")
        for test_set, values in evaluation["means"].items():
            means = ", ".join(f"{k}={v:.4g}" for k, v in values.items())
            lines += textwrap.wrap(
                means, 100, initial_indent=f"         {test_set}: ", subsequent_indent=" " * 9
            )
    else:
        lines.append("eval     (no evaluation recorded for this run's model)")
    return lines


def _detail_lines(lineage: dict[str, Any]) -> list[str]:
    """The full listing: model source, run params and metrics, every pair's files."""
    lines: list[str] = []
    run = lineage["run"]
    if lineage["model"]:
        lines.append(f"source   {lineage['model']['source']}")
    shown = {k: v for k, v in run["metrics"].items() if k.startswith("train_epoch/")}
    if shown:
        lines.append("metrics  " + ", ".join(f"{k}={v:.4g}" for k, v in shown.items()))
    params = ", ".join(f"{k}={v}" for k, v in run["params"].items())
    lines += textwrap.wrap(params, 100, initial_indent="params   ", subsequent_indent=" " * 9)
    lines.append("dvc.lock (full md5)")
    for stage, outs in lineage["dvc"].items():
        for path, md5 in outs.items():
            lines.append(f"         {stage:<9} {path:<24} {md5}")
    for ds in lineage["datasets"] or []:
        lines.append(f"dataset  {ds['name']}: {_splits(ds)}")
        for p in ds["pairs"]:
            mask = p["mask_method"] or "-"
            lines.append(f"         {p['pair_id']} [{p['split']}] mask={mask}")
            for role in ("ir", "vis", "mask"):
                if p[f"{role}_url"]:
                    lines.append(f"           {role:<4} {p[f'{role}_url']} {p[f'{role}_sha256']}")
    return lines


def render(
    lineage: dict[str, Any], checks: list[dict[str, Any]] | None = None, pairs: bool = False
) -> str:
    """Human-readable chain: a one-screen summary; with ``pairs`` also the full listing
    (every pair's URLs and sha256s, the run's params and metrics, full dvc.lock md5s)."""
    lines = _summary_lines(lineage)
    if pairs:
        lines += _detail_lines(lineage)
    else:
        lines.append(
            "(--pairs: every pair's URLs and sha256s, run params and metrics, full md5s;"
            " --json: everything)"
        )
    if checks is not None:
        lines.append("verify")
        for c in checks:
            state = "ok" if c["ok"] else "DRIFT"
            local = c["local"] or "missing"
            lines.append(
                f"         {state:<5} {c['item']:<24} recorded {c['recorded']} local {local}"
            )
    return "\n".join(lines)


def audit(
    target: str = DEFAULT_TARGET,
    as_json: bool = False,
    check: bool = False,
    root: Path = PROJECT_ROOT,
    pairs: bool = False,
) -> tuple[str, bool]:
    """(report text, drift found) for the CLI."""
    params = load_params(root / "params.yaml")
    uri = tracking.connect(root, params.tracking)  # refuses a missing or another copy's store
    lineage = collect(target, uri)
    checks = verify(lineage, root) if check else None
    drift = bool(checks) and not all(c["ok"] for c in checks)
    if as_json:
        return json.dumps({**lineage, "verify": checks}, indent=2), drift
    return render(lineage, checks, pairs), drift
