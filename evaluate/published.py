"""Published points from the papers, for context in reports only.

These numbers come **from the papers, on other datasets and backbones** (HMDB51/UCF101/
THUMOS14 with BN-Inception, ResNet3D-18, R(2+1)D-34, VGG-16). They are never comparable
one-to-one with a framesel run on another dataset and backbone; reports plot them in a
separate panel labelled so. Accuracies are fractions (the papers print %), FLOPs are what
the paper prints per video (paper 003 does not say whether its "FLOPs" are multiply-adds).

Each point: paper (file prefix in /work/shared/papers), source (table/figure), dataset,
backbone, method, m (frames or clips kept; None = all), metric ("top1" or "map"), value,
gflops (per video, None when the paper gives none).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

LABEL = "from the papers, other datasets/backbones"


@dataclass(frozen=True)
class PublishedPoint:
    paper: str
    source: str
    dataset: str
    backbone: str
    method: str
    m: int | None
    metric: str
    value: float
    gflops: float | None = None


def _p(paper, source, dataset, backbone, method, m, value, gflops=None, metric="top1"):
    return PublishedPoint(paper, source, dataset, backbone, method, m, metric, value, gflops)


_AS = ("000", "Table 3", "HMDB51 split1", "TSN BN-Inception RGB (Kinetics)")
_AS_T3 = {4: (61.5, 63.3, 63.6), 8: (62.7, 63.4, 63.7), 12: (63.1, 64.1, 64.3),
          16: (63.1, 63.8, 63.7), 20: (63.6, 63.3, 63.3), 25: (63.5, 63.5, 63.5)}

POINTS: tuple[PublishedPoint, ...] = (
    # 000 Table 3: spatial stream, T = 25 positions x 10 crops, random vs AS frame/region.
    *(_p(*_AS, method, m, acc / 100)
      for m, accs in _AS_T3.items()
      for method, acc in zip(("random", "as (frame)", "as (region)"), accs)),
    # 000 Table 4: alpha weighting of dropped frames (TSN ImageNet, two-stream, m = 12).
    *(_p("000", "Table 4", "HMDB51 3 splits", "TSN BN-Inception two-stream (ImageNet)",
         f"as alpha={a}", 12, acc / 100)
      for a, acc in ((0.0, 71.24), (0.1, 71.00), (0.2, 71.15), (0.3, 70.94))),
    # 000 Table 2: state ablation (TSN two-stream, HMDB51 split1).
    _p("000", "Table 2", "HMDB51 split1", "TSN two-stream", "tsn (all frames)", None, 0.709),
    _p("000", "Table 2", "HMDB51 split1", "TSN two-stream", "as state=features", 12, 0.713),
    _p("000", "Table 2", "HMDB51 split1", "TSN two-stream", "as state=both", 12, 0.722),
    # 003 Table I: trimmed datasets, 1:3 training and testing, ResNet3D-18 clips (m = 1 section).
    *(_p("003", "Table I", ds, "ResNet3D-18 RGB", method, m, acc / 100)
      for ds, col in (("UCF101 split1", 0), ("HMDB51 split1", 1))
      for method, m, *accs in (("random", 1, 83.9, 53.6), ("uniform", 1, 84.6, 56.8),
                               ("max_response", 1, 85.9, 55.9), ("dsn-f", 1, 85.7, 57.8),
                               ("dsn", 1, 86.5, 59.5), ("dense", None, 88.6, 59.5),
                               ("oracle", 1, 90.1, 66.8))
      for acc in (accs[col],)),
    # 003 Table II: training scheme M:N (test M = 3), ResNet3D-18, split1.
    *(_p("003", "Table II", ds, "ResNet3D-18 RGB", f"dsn[{mn}]", 3, acc / 100)
      for mn, u, h in (("1:3", 88.4, 59.6), ("1:6", 88.7, 59.2), ("3:3", 89.1, 61.5))
      for ds, acc in (("UCF101 split1", u), ("HMDB51 split1", h))),
    # 003 Table III: FLOPs per video on HMDB51 split1 (m = clips).
    _p("003", "Table III", "HMDB51 split1", "ResNet3D-18", "dense", 10, 0.595, 203.6),
    _p("003", "Table III", "HMDB51 split1", "ResNet3D-18", "dsn[1:3]", 4, 0.609, 104.6),
    _p("003", "Table III", "HMDB51 split1", "ResNet3D-18", "dsn[3:3]", 3, 0.615, 78.5),
    _p("003", "Table III", "HMDB51 split1", "R(2+1)D-34", "dense", 10, 0.755, 1528.8),
    _p("003", "Table III", "HMDB51 split1", "R(2+1)D-34", "dsn[1:3]", 4, 0.758, 631.2),
    # 003 Table IV: THUMOS14 (mAP).
    _p("003", "Table IV", "THUMOS14", "ResNet3D-18", "tsn", 20, 0.736, 407.2, "map"),
    _p("003", "Table IV", "THUMOS14", "ResNet3D-18", "dsn[3:3]", 6, 0.752, 157.0, "map"),
    _p("003", "Table IV", "THUMOS14", "R(2+1)D-34", "dense", 20, 0.819, 3057.6, "map"),
    _p("003", "Table IV", "THUMOS14", "R(2+1)D-34", "dsn[1:3]", 6, 0.831, 946.8, "map"),
    # 002 Table 1: temporal attention vs no attention (VGG-16, 1/3 rgb + 2/3 flow fusion).
    *(_p("002", "Table 1", ds, "VGG-16 two-stream + LSTM", method, None, acc / 100)
      for method, u, h in (("rgb no-attention", 83.4, 52.3), ("rgb tattn", 84.2, 54.2),
                           ("flow no-attention", 88.5, 60.7), ("flow tattn", 90.4, 62.9),
                           ("fused no-attention", 91.6, 63.3), ("fused tattn", 93.3, 65.0))
      for ds, acc in (("UCF101 3 splits", u), ("HMDB51 3 splits", h))),
)


def published_points(*, paper: str | None = None, source: str | None = None,
                     with_gflops: bool = False) -> list[dict]:
    """The points as plain dicts (with ``label`` = :data:`LABEL`), optionally filtered."""
    out = []
    for p in POINTS:
        if (paper and p.paper != paper) or (source and p.source != source) \
                or (with_gflops and p.gflops is None):
            continue
        out.append({**asdict(p), "label": LABEL})
    return out
