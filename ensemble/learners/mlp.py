"""A PyTorch MLP for tables, trained by small overridable steps.

The training core (:class:`TorchTrainer`) follows skorch's split: ``fit_loop``
runs epochs, ``train_step`` does one batch, ``get_loss`` computes the loss, so a
subclass changes one step without copying the loop. The neural fusion layer
reuses the same core.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ._base import Learner, register
from ._preprocess import OneHotScaler
from ._split import inner_split


def _torch() -> Any:
    import torch

    return torch


class TorchTrainer:
    """Mini-batch trainer with AdamW, cosine LR decay and early stopping.

    Parameters
    ----------
    module : torch.nn.Module
        The network.
    loss : {"ce", "mse"}
        Cross-entropy over logits or mean squared error.
    lr, weight_decay : float
        AdamW settings.
    batch_size, max_epochs, patience : int
        Loop settings; the best-validation weights are restored at the end.
    seed : int
        Seeds batch order and initialisation-independent randomness.
    device : str
        ``"cpu"`` or ``"cuda"``.
    """

    def __init__(self, module: Any, *, loss: str, lr: float, weight_decay: float,
                 batch_size: int, max_epochs: int, patience: int, seed: int,
                 device: str = "cpu") -> None:
        self.module = module
        self.loss = loss
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.seed = seed
        self.device = device

    def get_loss(self, out: Any, target: Any) -> Any:
        """Loss of one batch."""
        F = _torch().nn.functional
        if self.loss == "ce":
            return F.cross_entropy(out, target)
        return F.mse_loss(out.squeeze(-1), target)

    def train_step(self, xb: Any, yb: Any, optimizer: Any) -> float:
        """One optimisation step; returns the batch loss."""
        self.module.train()
        optimizer.zero_grad(set_to_none=True)
        loss = self.get_loss(self.module(xb), yb)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    def validation_loss(self, X: Any, y: Any) -> float:
        """Loss on a whole validation set, in eval mode."""
        torch = _torch()
        self.module.eval()
        with torch.no_grad():
            return float(self.get_loss(self.forward(X), y))

    def forward(self, X: Any) -> Any:
        """Batched inference, returning raw outputs."""
        torch = _torch()
        self.module.eval()
        outs = []
        with torch.no_grad():
            for i in range(0, len(X), 8192):
                outs.append(self.module(X[i:i + 8192]))
        return torch.cat(outs) if outs else torch.zeros((0, 1))

    def fit_loop(self, X: Any, y: Any, X_val: Any, y_val: Any) -> TorchTrainer:
        """Epochs of shuffled mini-batches until early stopping."""
        torch = _torch()
        gen = torch.Generator().manual_seed(self.seed)
        opt = torch.optim.AdamW(self.module.parameters(), lr=self.lr,
                                weight_decay=self.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.max_epochs)
        best, best_state, waited = math.inf, copy.deepcopy(self.module.state_dict()), 0
        self.history_: list[dict[str, float]] = []
        n = len(X)
        for epoch in range(self.max_epochs):
            order = torch.randperm(n, generator=gen).to(X.device)
            losses = []
            for i in range(0, n, self.batch_size):
                idx = order[i:i + self.batch_size]
                if len(idx) < 2:  # a batch of one breaks nothing but wastes a step
                    continue
                losses.append(self.train_step(X[idx], y[idx], opt))
            sched.step()
            val = self.validation_loss(X_val, y_val)
            self.history_.append({"epoch": epoch, "train_loss": float(np.mean(losses)),
                                  "valid_loss": val})
            if val < best - 1e-5:
                best, best_state, waited = val, copy.deepcopy(self.module.state_dict()), 0
            else:
                waited += 1
                if waited >= self.patience:
                    break
        self.module.load_state_dict(best_state)
        self.best_valid_loss_ = best
        return self


def build_mlp(n_in: int, n_out: int, width: int, depth: int, dropout: float) -> Any:
    """Linear → ReLU → Dropout blocks, halving the width after the first."""
    nn = _torch().nn
    layers: list[Any] = []
    d = n_in
    for i in range(depth):
        w = max(width // (2 ** i), 16)
        layers += [nn.Linear(d, w), nn.ReLU(), nn.Dropout(dropout)]
        d = w
    layers.append(nn.Linear(d, n_out))
    return nn.Sequential(*layers)


@register
class MLPLearner(Learner):
    """Multi-layer perceptron on one-hot categoricals and standardised numerics."""

    key = "mlp"
    uses_gpu = True
    relative_cost = 4.0
    _model_file = "model.pt"
    default_params: ClassVar[dict[str, Any]] = {
        "width": 256,  # first hidden layer; the second is half as wide
        "depth": 2,  # two hidden layers: deeper MLPs rarely help on tables
        "dropout": 0.1,  # light: early stopping already regularises
        "weight_decay": 1e-4,  # AdamW decoupled L2, a common tabular default
        "lr": 2e-3,  # AdamW with cosine decay to 0 over max_epochs
        "batch_size": 256,  # small batches generalise better on tables
        "max_epochs": 40,  # upper bound; early stopping usually ends sooner
        "patience": 6,  # epochs without validation improvement
    }

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        torch = _torch()
        ctx = self.context
        p = self.params
        torch.manual_seed(ctx.seed)
        torch.set_num_threads(max(1, ctx.n_threads))
        device = "cuda" if ctx.device == "cuda" and torch.cuda.is_available() else "cpu"
        self.pre_ = OneHotScaler(ctx.cat_mask, ctx.n_categories).fit(X)
        Z = self.pre_.transform(X)
        if ctx.is_classification:
            target = torch.as_tensor(y, dtype=torch.long)
            n_out, loss = ctx.n_classes, "ce"
            self.y_mean_, self.y_std_ = 0.0, 1.0
        else:
            self.y_mean_, self.y_std_ = float(y.mean()), float(y.std() or 1.0)
            target = torch.as_tensor((y - self.y_mean_) / self.y_std_, dtype=torch.float32)
            n_out, loss = 1, "mse"
        self.arch_ = {"n_in": Z.shape[1], "n_out": n_out, "width": int(p["width"]),
                      "depth": int(p["depth"]), "dropout": float(p["dropout"])}
        module = build_mlp(**self.arch_).to(device)
        tr, va = inner_split(y, classify=ctx.is_classification, fraction=0.1, seed=ctx.seed)
        Zt = torch.as_tensor(Z, device=device)
        target = target.to(device)
        trainer = TorchTrainer(module, loss=loss, lr=float(p["lr"]),
                               weight_decay=float(p["weight_decay"]),
                               batch_size=int(p["batch_size"]),
                               max_epochs=int(p["max_epochs"]), patience=int(p["patience"]),
                               seed=ctx.seed, device=device)
        idx_tr, idx_va = torch.as_tensor(tr, device=device), torch.as_tensor(va, device=device)
        trainer.fit_loop(Zt[idx_tr], target[idx_tr], Zt[idx_va], target[idx_va])
        self.history_ = trainer.history_
        self.model_ = module.to("cpu").eval()

    def _predict(self, X: np.ndarray) -> np.ndarray:
        torch = _torch()
        Z = torch.as_tensor(self.pre_.transform(X))
        with torch.no_grad():
            out = torch.cat([self.model_(Z[i:i + 8192]) for i in range(0, len(Z), 8192)])
        if self.context.is_classification:
            return torch.softmax(out, dim=1).numpy()
        return out.squeeze(-1).numpy() * self.y_std_ + self.y_mean_

    def _save(self, path: Path) -> None:
        import joblib

        torch = _torch()
        torch.save({"state_dict": self.model_.state_dict(), "arch": self.arch_,
                    "y_mean": self.y_mean_, "y_std": self.y_std_}, path)
        joblib.dump(self.pre_, path.with_suffix(".pre.joblib"))

    def _load(self, path: Path) -> None:
        import joblib

        torch = _torch()
        blob = torch.load(path, map_location="cpu", weights_only=True)
        self.arch_, self.y_mean_, self.y_std_ = blob["arch"], blob["y_mean"], blob["y_std"]
        self.model_ = build_mlp(**self.arch_)
        self.model_.load_state_dict(blob["state_dict"])
        self.model_.eval()
        self.pre_ = joblib.load(path.with_suffix(".pre.joblib"))
