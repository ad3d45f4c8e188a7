"""The classifier head CL: TSN consensus training on cached features, per-frame logits out."""
import numpy as np
import pytest
import torch

from agents.head import HeadConfig, _consensus_loss, apply_head, build_head, train_head
from data.errors import InputError

C, D = 5, 16


def _clustered(V, seed, T=6, K=2, noise=2.0):
    """Features (V, T, K, D) float16: the class prototype plus strong per-cell noise, so single
    cells are often wrong but the consensus over T·K cells is reliably right."""
    g = np.random.default_rng(seed)
    protos = np.random.default_rng(123).normal(size=(C, D))
    labels = g.integers(0, C, size=V)
    feats = protos[labels][:, None, None, :] + g.normal(scale=noise, size=(V, T, K, D))
    return feats.astype(np.float16), labels


@pytest.fixture(scope="module")
def data():
    return _clustered(300, 0), _clustered(200, 1)


def _video_acc(logits, labels):
    return float((logits.mean(axis=(1, 2)).argmax(1) == labels).mean())


def test_trains_and_generalises(data):
    (xtr, ytr), (xte, yte) = data
    head, prov = train_head(xtr, ytr, C, HeadConfig(epochs=15, lr=1e-2))
    out = apply_head(head, xte)
    assert out.shape == (200, 6, 2, C) and out.dtype == np.float32
    assert prov["final_train_accuracy"] > 0.9
    assert _video_acc(out, yte) > 0.9                       # chance is 0.2
    frame_acc = float((out.argmax(-1) == yte[:, None, None]).mean())
    assert frame_acc < _video_acc(out, yte)                # consensus beats single cells
    losses = [r["loss"] for r in prov["history"]]
    assert losses[-1] < 0.5 * losses[0]
    assert prov["config"]["epochs"] == 15 and prov["feature_dim"] == D and len(prov["train_list_sha256"]) == 64


def test_seeded_and_leaves_global_rng_alone(data):
    (xtr, ytr), _ = data
    cfg = HeadConfig(epochs=2, seed=7)
    before = torch.get_rng_state()
    a, _ = train_head(xtr, ytr, C, cfg)
    assert torch.equal(before, torch.get_rng_state())
    b, _ = train_head(xtr, ytr, C, cfg)
    c, _ = train_head(xtr, ytr, C, HeadConfig(epochs=2, seed=8))
    for pa, pb, pc in zip(a.parameters(), b.parameters(), c.parameters()):
        assert torch.equal(pa, pb)
    assert not all(torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters()))


def test_hidden_layer_sgd_and_validation_split(data):
    (xtr, ytr), _ = data
    cfg = HeadConfig(hidden=32, epochs=15, lr=0.05, optimizer="sgd", val_fraction=0.2)
    head, prov = train_head(xtr, ytr, C, cfg)
    assert prov["num_val"] == 60 and prov["num_train"] == 240
    assert prov["final_val_accuracy"] > 0.85
    assert isinstance(head[0], torch.nn.Linear) and head[0].out_features == 32


def test_consensus_loss_is_cross_entropy_of_mean_logits():
    head = build_head(3, 2, HeadConfig(dropout=0.0))
    x = torch.randn(4, 5, 2, 3)
    y = torch.tensor([0, 1, 1, 0])
    loss, video = _consensus_loss(head, x, y, multilabel=False)
    mean_logits = head(x).mean(dim=(1, 2))
    manual = -torch.log_softmax(mean_logits, 1)[torch.arange(4), y].mean()
    torch.testing.assert_close(loss, manual)
    torch.testing.assert_close(video, mean_logits)


def test_multilabel_uses_bce(data):
    (xtr, ytr), _ = data
    multi = np.eye(C, dtype=np.uint8)[ytr]
    rows = np.arange(0, len(ytr), 3)
    multi[rows, (ytr[rows] + 1) % C] = 1                   # a second true class on every third video
    head, prov = train_head(xtr, multi, C, HeadConfig(epochs=10, lr=1e-2), multilabel=True)
    assert prov["multilabel"] and prov["final_train_accuracy"] > 0.9
    x = torch.from_numpy(xtr.astype(np.float32))
    with torch.no_grad():
        video = head(x).mean(dim=(1, 2))
        bce = torch.nn.functional.binary_cross_entropy_with_logits(video, torch.from_numpy(multi).float())
        untrained = build_head(D, C, HeadConfig()).eval()
        bce0 = torch.nn.functional.binary_cross_entropy_with_logits(
            untrained(x).mean(dim=(1, 2)), torch.from_numpy(multi).float())
    assert float(bce) < 0.6 * float(bce0)
    assert prov["history"][-1]["loss"] < 0.6 * prov["history"][0]["loss"]
    prob, truth = torch.sigmoid(video), torch.from_numpy(multi).bool()
    assert float(prob[truth].mean() - prob[~truth].mean()) > 0.5


def test_apply_head_matches_module_and_handles_empty(data):
    _, (xte, _) = data
    head = build_head(D, C, HeadConfig()).eval()
    out = apply_head(head, xte[:10], batch_size=3)
    with torch.no_grad():
        want = head(torch.from_numpy(xte[:10].astype(np.float32))).numpy()
    np.testing.assert_allclose(out, want, rtol=1e-6, atol=1e-6)
    assert apply_head(head, xte[:0]).shape == (0, 6, 2, C)


def test_bad_input_raises_input_error(data):
    (xtr, ytr), _ = data
    with pytest.raises(InputError):
        train_head(xtr[:, 0], ytr, C, HeadConfig(epochs=1))
    with pytest.raises(InputError):
        train_head(xtr, ytr[:-1], C, HeadConfig(epochs=1))
    with pytest.raises(InputError):
        train_head(xtr, ytr + C, C, HeadConfig(epochs=1))
    with pytest.raises(InputError):
        HeadConfig(optimizer="rmsprop")
    with pytest.raises(InputError):
        HeadConfig(val_fraction=1.0)
