"""Several test splits (UCF101's three, HMDB51's three): every split's rows through
:func:`evaluate.protocols.run_protocols`, then one mean row per group over the splits."""
from __future__ import annotations

import math

from evaluate import keys, metrics
from evaluate.pairing import REFERENCES, ref_fields
from evaluate.protocols import ProtocolConfig, run_protocols


GROUP_KEYS = ("protocol", "method", "seed", "stream", "m", "mode", "alpha", "fusion_weights", "state", "mn")
MEAN_KEYS = ("top1", "top5", "mean_class", "map", "fraction_kept", "gflops_full", "gflops_deployable",
             "seconds_full", "seconds_deployable") \
    + tuple(ref_fields(r)[0] for r in REFERENCES) + tuple(f"vs_{r}_top1" for r in REFERENCES) + keys.KEY_COLUMNS


def summarize_splits(rows: list[dict]) -> list[dict]:
    """Mean ± std (ddof=1) over splits: one row per group (a seed, or the seed mean, is its
    own group) with split="mean", ``<key>_std`` fields and ``num_splits``; per-split CIs and
    p-values do not average and are null."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r["split"] != "mean":
            groups.setdefault(tuple(r.get(k) for k in GROUP_KEYS), []).append(r)
    out = []
    for group in groups.values():
        row = {**group[0], "split": "mean", "num_splits": len(group), "num_videos": sum(r["num_videos"] for r in group),
               **{f: None for ref in REFERENCES for f in ref_fields(ref)[1:] if f in group[0]}}
        for k in MEAN_KEYS:
            if all(k not in r for r in group):
                continue
            vals = [r.get(k) for r in group]
            if any(v is None for v in vals):
                row[k], row[f"{k}_std"] = None, None
                continue
            mean, std = metrics.mean_std(vals)
            row[k], row[f"{k}_std"] = mean, (None if math.isnan(std) else std)
        out.append(row)
    return out


def evaluate_splits(splits: dict, *, config: ProtocolConfig = ProtocolConfig(), costs=None,
                    progress: bool = False, clusters: dict | None = None) -> list[dict]:
    """``splits``: name -> (states, methods). Every split's rows, then the mean rows.
    ``progress``: a bar on stderr over splits × protocols, naming the split, protocol,
    method and stream at work; ``clusters``: split name -> (V, G) memberships (run_protocols)."""
    from tqdm import tqdm

    rows = []
    with tqdm(total=len(splits) * len(config.protocols), desc="evaluate", unit="protocol",
              disable=not progress, dynamic_ncols=True) as bar:
        for name, (states, methods) in splits.items():
            rows.extend(run_protocols(states, methods, split=name, config=config, bar=bar,
                                      costs=costs.get(name) if isinstance(costs, dict) else costs,
                                      clusters=(clusters or {}).get(name)))
    ok = [r for r in rows if "failed" not in r]      # failed rows (MethodFailed) carry no metrics to average
    return rows + (summarize_splits(ok) if len(splits) > 1 else [])
