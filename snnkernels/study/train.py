"""Training with early stopping, the clean test metrics, and the cost measurements taken in the
same run: training and inference samples/s, the share of step time in
backward, the bytes saved for backward, peak CUDA memory. The spiking layers' activity is
measured inside the ops (study/mechanism.py)."""

from __future__ import annotations

import copy
import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from sklearn import metrics as skm
from torch import nn

from .data import METRICS


@dataclass(frozen=True)
class TrainConfig:
    """Every arm trains with the same schedule: Adam, at most `epochs` epochs, stopping after
    `patience` epochs without a better validation metric, keeping the best epoch's weights."""

    epochs: int = 40
    patience: int = 8
    batch_size: int = 64
    lr: float = 2e-3


@dataclass
class TrainResult:
    model: nn.Module
    epochs: int      # epochs run
    seconds: float   # wall time of training, validation included
    val_curve: list = None  # [seconds since the start, validation metric] after each epoch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def metric_value(logits: torch.Tensor, y: torch.Tensor, metric: str) -> float:
    """The accuracy or balanced accuracy (the mean recall over the classes present in y) of the
    logits' argmax."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    y_true, pred = y.cpu().numpy(), logits.argmax(1).cpu().numpy()
    if metric == "accuracy":
        return float(skm.accuracy_score(y_true, pred))
    with warnings.catch_warnings():  # a predicted class absent from y: not a recall to average
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        return float(skm.balanced_accuracy_score(y_true, pred))


def clean_metrics(logits: torch.Tensor, y: torch.Tensor) -> dict:
    """{"accuracy", "balanced_accuracy", "roc_auc"} of the logits [N, C] for labels y: ROC AUC
    of the softmax probabilities (of class 1 for two classes, one-vs-rest macro average for
    more); None where undefined (a class missing from y)."""
    if logits.dim() != 2 or y.shape != logits.shape[:1]:
        raise ValueError(f"clean_metrics: logits must be [N, C] and y [N], got "
                         f"{tuple(logits.shape)} and {tuple(y.shape)}")
    y_true = y.cpu().numpy()
    prob = torch.softmax(logits.detach().double(), dim=1).cpu().numpy()
    classes = logits.shape[1]
    if len(np.unique(y_true)) < classes:
        roc_auc = None
    elif classes == 2:
        roc_auc = float(skm.roc_auc_score(y_true, prob[:, 1]))
    else:
        roc_auc = float(skm.roc_auc_score(y_true, prob, multi_class="ovr",
                                          labels=np.arange(classes)))
    return {"accuracy": metric_value(logits, y, "accuracy"),
            "balanced_accuracy": metric_value(logits, y, "balanced_accuracy"),
            "roc_auc": roc_auc}


@torch.no_grad()
def predict(model: nn.Module, X: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    model.eval()
    return torch.cat([model(X[i:i + batch_size]) for i in range(0, len(X), batch_size)])


def train(model: nn.Module, X_train, y_train, X_val, y_val, config: TrainConfig, *,
          metric: str, seed: int, progress=None, adversary=None) -> TrainResult:
    """Trains in place from `seed` (batch order) and returns the best-validation weights.
    adversary: None, or a callable (x, y) -> the batch to train on instead of x (adversarial
    training, study/adversarial.py)."""
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    best, best_state, stale, epoch, curve = -1.0, None, 0, 0, []
    start = time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        model.train()
        for idx in torch.randperm(len(X_train), generator=generator).split(config.batch_size):
            idx = idx.to(device)
            x = X_train[idx] if adversary is None else adversary(X_train[idx], y_train[idx])
            loss = nn.functional.cross_entropy(model(x), y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        score = metric_value(predict(model, X_val), y_val, metric)
        curve.append([time.perf_counter() - start, score])  # for time to accuracy
        if progress is not None:
            progress(f"epoch {epoch} val {score:.3f}")
        if score > best:
            best, best_state, stale = score, copy.deepcopy(model.state_dict()), 0
        else:
            stale += 1
            if stale >= config.patience:
                break
    model.load_state_dict(best_state)
    model.eval()
    return TrainResult(model, epoch, time.perf_counter() - start, curve)


def training_throughput(model: nn.Module, X, y, batch_size: int, *, windows: int = 5,
                        window_seconds: float = 0.08):
    """(samples/s, share of step time in backward) of Adam steps on batches of X, on a copy of
    the model (the trained one is not touched), after 3 warm-up steps: the median over
    `windows` timing windows of >= window_seconds each, so that a moment of contention from
    other processes does not decide the figure. Timed apart from training so that every arm is
    measured the same way, on full batches, warm."""
    model = copy.deepcopy(model).train()
    device = X.device
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    n = min(batch_size, len(X))
    order = torch.arange(len(X), device=device).repeat(2)  # batches wrap around small sets
    offset = 0

    def step():
        nonlocal offset
        idx = order[offset:offset + n]
        offset = (offset + n) % len(X)
        _sync(device)
        t0 = time.perf_counter()
        loss = nn.functional.cross_entropy(model(X[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        _sync(device)
        t1 = time.perf_counter()
        loss.backward()
        _sync(device)
        t2 = time.perf_counter()
        opt.step()
        _sync(device)
        return time.perf_counter() - t0, t2 - t1

    for _ in range(3):
        step()
    rates, shares = [], []
    for _ in range(windows):
        steps = total = backward = 0.0
        while total < window_seconds:
            t, b = step()
            steps, total, backward = steps + 1, total + t, backward + b
        rates.append(steps * n / total)
        shares.append(backward / total)
    return float(np.median(rates)), float(np.median(shares))


def inference_samples_per_s(model: nn.Module, X: torch.Tensor, *, windows: int = 5,
                            window_seconds: float = 0.05) -> float:
    """Forward passes over X (no grad): the median rate over `windows` timing windows of
    >= window_seconds each, after one warm-up pass."""
    device = X.device
    predict(model, X)
    rates = []
    for _ in range(windows):
        runs, start = 0, time.perf_counter()
        while True:
            predict(model, X)
            runs += 1
            _sync(device)
            elapsed = time.perf_counter() - start
            if elapsed >= window_seconds:
                rates.append(runs * len(X) / elapsed)
                break
    return float(np.median(rates))


def activation_bytes(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> int:
    """Bytes of the distinct tensors autograd saves for backward in one training step on
    (X, y) (parameters excluded: they exist anyway). Works on every device, unlike a CPU
    allocator peak, which torch does not track."""
    params = {p.data_ptr() for p in model.parameters()}
    seen: dict = {}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params:
            seen[ptr] = t.untyped_storage().nbytes()
        return t

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = nn.functional.cross_entropy(model(X), y)
    loss.backward()
    model.zero_grad(set_to_none=True)
    return int(sum(seen.values()))
