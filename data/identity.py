"""One identity per artefact, compared in one function (GUIDE §6.12).

What a store's rows, a stream's logits and an agent checkpoint *mean* is a small JSON-ready
dict; two artefacts may be mixed only when their identities are equal, and
:func:`differences` names every key where they are not. Execution settings (batch size,
device, workers, threads, compile) are recorded in the artefacts but are never part of an
identity: they change how fast something ran, not what it computed.

- :func:`features_identity` — a store's features: schema, the settings that determine the
  rows (minus :data:`EXECUTION_SETTINGS` and the flow algorithm's execution parameters),
  classes, shapes, and each stream's backbone weights by sha256 (the file name is not the
  identity: the same file renamed is the same features; another file of the same name is not).
- :func:`logits_identity` — what a stream's per-frame logits came from: the ``framesel
  head`` weights (``head_sha256``) or the backbone's own head (its weights' sha256).
- an agent checkpoint records both (``store_identity["features"]`` and ``["logits"]``) plus
  the training list's sha256; train's resume and evaluate compare them here.
"""
from __future__ import annotations

from data.errors import InputError

# Settings-record keys that are recorded but never compared: the batch size says how it ran;
# the checkpoint paths name files whose sha256 (``backbone_sha256``) is what is compared.
EXECUTION_SETTINGS = ("batch_size", "checkpoints")
# Flow parameters that say where and how a flow algorithm runs, never what it computes
# (tvl1-torch's device, batch size and torch.compile; OpenCV CUDA's device id).
EXECUTION_FLOW_PARAMS = ("device", "batch_size", "compile", "device_id", "cuda_device")
# Fields of the recorded flow config that are execution facts.
EXECUTION_FLOW_FIELDS = ("threads",)


def flow_identity(flow: dict | None) -> dict | None:
    """The recorded flow config (``extract.flow.FlowConfig.as_dict``) without its execution
    parameters; None for a store without flow."""
    if not flow:
        return None
    out = {k: v for k, v in flow.items() if k not in EXECUTION_FLOW_FIELDS}
    if isinstance(out.get("params"), dict):
        out["params"] = {k: v for k, v in out["params"].items() if k not in EXECUTION_FLOW_PARAMS}
    return out


def settings_identity(settings: dict | None) -> dict:
    """A store's settings record without what only says how the extraction ran."""
    out = {k: v for k, v in (settings or {}).items() if k not in EXECUTION_SETTINGS}
    if "flow" in out:
        out["flow"] = flow_identity(out["flow"])
    return out


def features_identity(attrs: dict) -> dict:
    """What a store's rows mean, from its root attrs (``Store.attrs``)."""
    backbone = attrs.get("backbone") or {}
    return {"schema": attrs.get("schema_version"), "settings": settings_identity(attrs.get("settings")),
            "classes": attrs.get("classes"), "multilabel": bool(attrs.get("multilabel")), "T": attrs.get("T"),
            "crops": attrs.get("crops"), "flow_stack": attrs.get("flow_stack"),
            "backbone_sha256": {s: (d or {}).get("sha256") for s, d in sorted(backbone.items())}}


def backbone_files(attrs: dict) -> dict:
    """{stream: weights file as recorded} — for messages, never compared."""
    return {s: (d or {}).get("file") for s, d in (attrs.get("backbone") or {}).items()}


def logits_identity(provenance: dict | None, backbone: dict | None) -> dict | None:
    """What one stream's logits came from. ``provenance``: the stream's logits provenance
    (``Store.logits_provenance()[stream]``) or None; ``backbone``: the stream's backbone attrs
    (``attrs["backbone"][stream]``). A ``framesel head`` record names its weights' sha256;
    without one the logits are the backbone's own head (identified by its weights)."""
    if provenance and provenance.get("head_sha256"):
        return {"by": "framesel head", "head_sha256": provenance["head_sha256"]}
    if provenance:          # a head record from before head_sha256: its training list at least
        return {"by": provenance.get("by", "unknown"), "train_list_sha256": provenance.get("train_list_sha256")}
    if backbone and backbone.get("logits_stored", True) and backbone.get("num_classes"):
        return {"by": "backbone", "sha256": backbone.get("sha256")}
    return None


def store_logits_identity(store, streams) -> dict:
    """{stream: :func:`logits_identity`} of ``streams`` of an open store."""
    prov, bb = store.logits_provenance(), store.attrs.get("backbone") or {}
    return {s: logits_identity(prov.get(s), bb.get(s)) for s in streams}


def _short(v) -> str:
    if isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v):
        return v[:12] + "…"
    return repr(v)


def differences(theirs, ours, *, prefix: str = "") -> list[str]:
    """Every leaf where two identities differ, as ``key.path THEIRS vs OURS`` (sha256 values
    shortened to 12 hex digits). Dicts are compared key by key (a key one side lacks is
    ``None`` there; where an ``algorithm`` or ``name`` differs, that alone is named);
    anything else by equality (lists and tuples alike)."""
    if isinstance(theirs, dict) and isinstance(ours, dict):
        for name in ("algorithm", "name"):      # another algorithm: its parameters differ too
            if name in theirs and theirs.get(name) != ours.get(name):
                key = f"{prefix}.{name}" if prefix else name
                return [f"{key} {_short(theirs.get(name))} vs {_short(ours.get(name))} (and its parameters)"]
        out = []
        for k in sorted(set(theirs) | set(ours), key=str):
            out += differences(theirs.get(k), ours.get(k), prefix=f"{prefix}.{k}" if prefix else str(k))
        return out
    norm = lambda v: list(v) if isinstance(v, tuple) else v  # noqa: E731
    if norm(theirs) == norm(ours):
        return []
    return [f"{prefix or 'value'} {_short(theirs)} vs {_short(ours)}"]


def require_same(theirs, ours, *, what: str, fix: str) -> None:
    """InputError naming every difference: ``{what}: differ in A vs B, ...; {fix}``.
    ``what`` says which two artefacts (theirs first), ``fix`` what the user can do."""
    diff = differences(theirs, ours)
    if diff:
        raise InputError(f"{what} differ in {'; '.join(diff)}; {fix}")


__all__ = ["EXECUTION_FLOW_FIELDS", "EXECUTION_FLOW_PARAMS", "EXECUTION_SETTINGS", "backbone_files",
           "differences", "features_identity", "flow_identity", "logits_identity", "require_same",
           "settings_identity", "store_logits_identity"]
