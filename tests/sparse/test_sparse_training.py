"""Training check: a small 2-layer SNN on scikit-learn's breast_cancer trained with
TopK(fraction=0.05) and with ActiveWindow(0.2) on its hidden layer reaches test accuracy within
2 points of its dense twin (same seed, same initial weights, same batches, same epochs)."""

from __future__ import annotations

import pytest
import torch

import snnkernels
from snnkernels import sparse as sp

datasets = pytest.importorskip("sklearn.datasets")
model_selection = pytest.importorskip("sklearn.model_selection")

T, HIDDEN, EPOCHS, BATCH, LR = 8, 128, 30, 32, 5e-3


def data():
    x, y = datasets.load_breast_cancer(return_X_y=True)
    x_tr, x_te, y_tr, y_te = model_selection.train_test_split(x, y, test_size=0.3, stratify=y,
                                                              random_state=0)
    mean, std = x_tr.mean(0), x_tr.std(0)
    tensor = lambda a: torch.tensor((a - mean) / std, dtype=torch.float32)  # noqa: E731
    return tensor(x_tr), torch.tensor(y_tr), tensor(x_te), torch.tensor(y_te)


class SNN(torch.nn.Module):
    """Direct-current encoding (features every step) -> linear_lif hidden layer (the sparse
    mask acts here) -> linear_lif readout of 2 non-resetting neurons (dense); logits = the
    readout membrane averaged over time."""

    def __init__(self, features, sparse):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w1 = torch.nn.Parameter(torch.randn(HIDDEN, features, generator=g) / features ** 0.5)
        self.b1 = torch.nn.Parameter(torch.full((HIDDEN,), 0.3))
        self.w2 = torch.nn.Parameter(torch.randn(2, HIDDEN, generator=g) / HIDDEN ** 0.5)
        self.b2 = torch.nn.Parameter(torch.zeros(2))
        self.sparse = sparse

    def forward(self, x):
        x = x.unsqueeze(0).expand(T, *x.shape)
        spk, _ = snnkernels.linear_lif(x, self.w1, self.b1, 0.9, sparse=self.sparse)
        _, mem = snnkernels.linear_lif(spk, self.w2, self.b2, 0.9, reset_mechanism="none")
        return mem.mean(0)


def train_and_test(sparse) -> float:
    x_tr, y_tr, x_te, y_te = data()
    model = SNN(x_tr.shape[1], sparse)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    g = torch.Generator().manual_seed(1)
    for _ in range(EPOCHS):
        for batch in torch.randperm(len(x_tr), generator=g).split(BATCH):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x_tr[batch]), y_tr[batch]).backward()
            opt.step()
    with torch.no_grad():
        return (model(x_te).argmax(1) == y_te).double().mean().item() * 100


def test_sparse_arms_match_dense_accuracy():
    dense = train_and_test(None)
    assert dense >= 90, f"dense twin reaches only {dense:.1f}%: the setup is broken"
    for spec in (sp.TopK(fraction=0.05), sp.ActiveWindow(0.2)):
        acc = train_and_test(spec)
        assert acc >= dense - 2, f"{spec}: {acc:.1f}% vs dense {dense:.1f}%"
