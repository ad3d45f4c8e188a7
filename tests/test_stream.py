"""The light stage's streaming source (data/store_rows.py): store rows read per mini-batch give
exactly what the in-memory states give — same weights for one seed, same selections, same
report — and the choice between the two is by size, overridable."""
from __future__ import annotations

import json
import random
import time

import numpy as np
import pytest
import torch

from agents.as_agent import ASAgent, ASConfig
from agents.from_store import load_states, rows_for_list
from agents.head import train_head, HeadConfig
from agents.train_stage import TrainStageConfig, run_train
from agents.synthetic import write_planted_store
from data.errors import InputError
from data.lists import read_list
from data.store import open_store
from data.store_rows import StoreRows, memory_limit, prefetch, stream_by_default
from evaluate.methods import select_in_blocks
from evaluate.run import EvaluateConfig, run_evaluate
from agents.base import selector_class


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("planted")
    return write_planted_store(root, train=24, test=12, T=10, n_key=2, D=16, C=4, map_size=2)


def _states(planted, which: int, load: str):
    store_path, *lists = planted
    store = open_store(store_path)
    rows = rows_for_list(store, read_list(lists[which]))
    return store, load_states(store, "rgb", rows, load=load)


def test_store_rows_index_like_a_tensor(planted):
    store, mem = _states(planted, 0, "memory")
    _, lazy = _states(planted, 0, "stream")
    assert lazy.streamed and not mem.streamed
    view = lazy.features
    assert isinstance(view, StoreRows) and view.shape == mem.features.shape and len(view) == 24
    assert view.device.type == "cpu" and view.dtype == torch.float32 and view.to("cpu") is view
    for idx in (3, slice(2, 9), np.array([7, 1, 1, 20]), torch.tensor([5, 0])):
        assert torch.equal(view[idx], mem.features[idx]), idx
    assert torch.equal(view.subset([4, 2]).materialise(), mem.features[[4, 2]])
    sub = lazy.subset(torch.tensor([9, 3]))
    assert not sub.streamed and torch.equal(sub.logits, mem.logits[[9, 3]])
    assert np.array_equal(sub.video_ids, mem.video_ids[[9, 3]])
    store.close()


def test_prefetch_keeps_order_and_reads_ahead():
    def read(i):
        time.sleep(random.random() * 0.01)
        return i * i

    items = list(range(40))
    assert list(prefetch(read, items, depth=4, workers=3)) == [i * i for i in items]
    assert list(prefetch(read, items, depth=0)) == [i * i for i in items]
    assert list(prefetch(read, [], depth=2)) == []
    gen = prefetch(read, items, depth=2)
    assert next(gen) == 0
    gen.close()                                   # an early stop cancels what is pending


def test_load_is_chosen_by_size_and_overridable(monkeypatch):
    assert stream_by_default(10**18, "auto") and not stream_by_default(10, "auto")
    assert stream_by_default(10, "stream") and not stream_by_default(10**18, "memory")
    assert memory_limit() > 0
    with pytest.raises(InputError, match="--load must be one of"):
        stream_by_default(10, "disk")


@pytest.mark.parametrize("backend", ["planted.zarr", "planted.h5"])
def test_streamed_and_in_memory_training_give_identical_weights(tmp_path, backend):
    """The issue's proof: `framesel train --agent as` with --load stream and --load memory,
    one seed, two epochs of per-video updates: the same weights, bit for bit, on either
    backend (the store stays open while a streamed agent trains)."""
    store, train, _ = write_planted_store(tmp_path, train=24, test=4, T=10, n_key=2, D=16, C=4, map_size=2,
                                          name=backend)
    agents = {}
    for load in ("memory", "stream"):
        cfg = TrainStageConfig(store=str(store), agent="as", train_list=str(train), out=str(tmp_path / f"{load}.pt"),
                               overrides=(("epochs", 2), ("lr", 1e-3)), seed=3, load=load, quiet=True)
        agents[load] = run_train(cfg)
    a, b = (agents[k].module.state_dict() for k in ("memory", "stream"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert agents["memory"].history[-1]["loss"] == agents["stream"].history[-1]["loss"]
    # and the weights moved: the test compares two trained networks, not two initialisations
    fresh = ASAgent(ASConfig(), num_classes=4, feature_dim=16, seed=3).module.state_dict()
    assert any(not torch.equal(a[k], fresh[k]) for k in a)


def test_train_refuses_to_stream_an_agent_that_reads_everything(planted, tmp_path):
    store, train, _ = planted
    cfg = TrainStageConfig(store=str(store), agent="rtsae", train_list=str(train), out=str(tmp_path / "r.pt"),
                           load="stream", quiet=True)
    with pytest.raises(InputError, match="rtsae reads all of its training states at once.*as"):
        run_train(cfg)
    assert not (tmp_path / "r.pt").exists()


def test_streamed_head_equals_in_memory(planted):
    store, lazy = _states(planted, 0, "stream")
    rows = lazy.video_ids
    fp16 = store.read_rows("rgb/features", rows)
    cfg = HeadConfig(epochs=3, batch_size=5, val_fraction=0.25)
    h_mem, p_mem = train_head(fp16, store.labels[rows], 4, cfg)
    h_str, p_str = train_head(StoreRows(store, "rgb/features", rows, dtype=np.float16), store.labels[rows], 4, cfg)
    assert all(torch.equal(x, y) for x, y in zip(h_mem.state_dict().values(), h_str.state_dict().values()))
    untimed = lambda history: [{k: v for k, v in r.items() if k != "seconds"} for r in history]  # noqa: E731
    assert untimed(p_mem["history"]) == untimed(p_str["history"])
    store.close()


@pytest.mark.parametrize("name", ["uniform", "random", "max_response", "motion", "oracle", "as"])
def test_selection_in_blocks_equals_one_pass(planted, name):
    """evaluate selects a block of videos at a time; any block size and either load give the
    selection of one pass over all videos (random's draw is keyed by the video)."""
    store, mem = _states(planted, 1, "memory")
    _, lazy = _states(planted, 1, "stream")
    sel = ASAgent(ASConfig(), num_classes=4, feature_dim=16, seed=0) if name == "as" else selector_class(name)()
    whole = sel.select(mem, 3)
    for states, block in ((mem, 5), (lazy, 5), (lazy, 1024)):
        part = select_in_blocks(sel, states, 3, block=block)
        for field in ("scores", "keep", "video_scores", "num_kept"):
            assert torch.equal(getattr(part, field), getattr(whole, field)), (name, block, field)
        lean = select_in_blocks(sel, states, 3, block=block, summary=True, frame_scores=True)   # evaluate's cache
        assert torch.equal(lean.video_scores, whole.video_scores) and torch.equal(lean.num_kept, whole.num_kept)
        assert torch.equal(lean.positions, whole.keep.any(2).sum(1).int())
        assert torch.equal(lean.cells, whole.keep.sum((1, 2)).int())
        assert torch.equal(lean.frame_scores, whole.scores.float().mean(2)), (name, block)
    store.close()


@pytest.mark.parametrize("backend", ["planted.zarr", "planted.h5"])
def test_evaluate_report_is_the_same_streamed(tmp_path, backend):
    store, train, test = write_planted_store(tmp_path, train=24, test=12, T=10, n_key=2, D=16, C=4, map_size=2,
                                             name=backend)
    ckpt = tmp_path / "as.pt"
    run_train(TrainStageConfig(store=str(store), agent="as", train_list=str(train), out=str(ckpt),
                               overrides=(("epochs", 1),), quiet=True))
    results = {}
    for load in ("memory", "stream"):
        out = tmp_path / f"report-{load}"
        run_evaluate(EvaluateConfig(store=str(store), test_lists=(str(test),), out=str(out), agents=(str(ckpt),),
                                    clamp_m=True, load=load, quiet=True))
        rows = json.loads((out / "results.json").read_text())["rows"]
        results[load] = [{k: v for k, v in r.items() if k != "seconds"} for r in rows]
    assert results["memory"] == results["stream"] and len(results["memory"]) > 10


def test_scores_kept_across_budgets_give_the_same_selections(planted):
    """evaluate scores an agent's block once and reuses it for every m (Selector.select_scored):
    the selections equal fresh ones, and the reuse reads no features (they stay unread views)."""
    store, lazy = _states(planted, 1, "stream")
    agent = ASAgent(ASConfig(), num_classes=4, feature_dim=16, seed=0)
    cache: dict = {}
    first = select_in_blocks(agent, lazy, 3, block=5, scores=cache)
    assert len(cache) == 3                                   # 12 videos in blocks of 5
    calls = []
    agent.score = lambda states: calls.append(1)             # a reuse must not score again
    for m in (1, 3, 7):
        again = select_in_blocks(agent, lazy, m, block=5, scores=cache)
        fresh = ASAgent.select(ASAgent(ASConfig(), num_classes=4, feature_dim=16, seed=0),
                               lazy.subset(np.arange(12)), m)
        assert torch.equal(again.keep, fresh.keep) and torch.equal(again.video_scores, fresh.video_scores)
    assert not calls and torch.equal(first.scores, again.scores)
    store.close()


def test_direct_chunk_reads_equal_zarr_reads(tmp_path, monkeypatch):
    """ZarrStore._read_rows decodes framesel's one-row blosc chunks itself; every array of a
    store (float16, float32, int32), and a store written with zstd as before issue 13, read
    exactly what zarr reads."""
    import data.store_zarr as sz
    from zarr.codecs import BloscCodec

    for codec in ("lz4", "zstd"):
        monkeypatch.setattr(sz, "_COMPRESSOR", BloscCodec(cname=codec, clevel=3, shuffle="bitshuffle"))
        store_path, *_ = write_planted_store(tmp_path / codec, train=6, test=2, T=5, n_key=1, D=8, C=3, map_size=2)
        with open_store(store_path) as s:
            for name in ("rgb/features", "rgb/logits", "rgb/feature_maps", "motion", "frame_index"):
                assert sz._plain_chunks(s._array(name)), name
                rows = [5, 0, 3]
                want = np.stack([np.asarray(s._array(name)[i]) for i in rows])
                got = s.read_rows(name, rows)
                assert got.dtype == want.dtype and np.array_equal(got, want), (codec, name)
            for other in ("rgb/logits_written", "videos/path"):        # one chunk for all; strings
                assert not sz._plain_chunks(s._array(other)), other
            assert s.read_rows("videos/path", [1]).tolist() == [s.paths[1]]


def test_out_of_memory_is_one_line_naming_the_way_out():
    import click
    from pipeline.cli import domain_errors

    @domain_errors
    def command(load="memory"):
        raise MemoryError()

    with pytest.raises(click.ClickException, match="out of memory with --load memory: --load stream"):
        command(load="memory")
    with pytest.raises(click.ClickException, match="out of memory .*--load stream"):
        command(load="auto")
