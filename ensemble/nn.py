"""The torch training core shared by the MLP learner and neural fusion.

Split as skorch splits ``NeuralNet``: :meth:`TorchTrainer.fit_loop` runs the
epochs, :meth:`TorchTrainer.train_step` does one batch and
:meth:`TorchTrainer.get_loss` computes the loss, so a subclass changes one step
without copying the loop.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np

__all__ = ["TorchTrainer", "build_mlp"]


def _torch() -> Any:
    import torch

    return torch


class TorchTrainer:
    """Mini-batch trainer with AdamW, cosine LR decay and early stopping.

    Parameters
    ----------
    module : torch.nn.Module
        The network.
    loss : {"ce", "nll", "mse"}
        Cross-entropy over logits, negative log-likelihood over log-probabilities,
        or mean squared error.
    lr, weight_decay : float
        AdamW settings.
    batch_size, max_epochs, patience : int
        Loop settings; the best-validation weights are restored at the end.
    seed : int
        Seeds batch order and initialisation-independent randomness.
    device : str
        ``"cpu"`` or ``"cuda"``.
    """

    def __init__(
        self,
        module: Any,
        *,
        loss: str,
        lr: float,
        weight_decay: float,
        batch_size: int,
        max_epochs: int,
        patience: int,
        seed: int,
        device: str = "cpu",
    ) -> None:
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
        if self.loss == "nll":  # the module already returns log-probabilities
            return F.nll_loss(out, target)
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
                outs.append(self.module(X[i : i + 8192]))
        return torch.cat(outs) if outs else torch.zeros((0, 1))

    def fit_loop(self, X: Any, y: Any, X_val: Any, y_val: Any) -> TorchTrainer:
        """Epochs of shuffled mini-batches until early stopping."""
        torch = _torch()
        gen = torch.Generator().manual_seed(self.seed)
        opt = torch.optim.AdamW(
            self.module.parameters(), lr=self.lr, weight_decay=self.weight_decay
        )
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.max_epochs)
        best, best_state, waited = math.inf, copy.deepcopy(self.module.state_dict()), 0
        self.history_: list[dict[str, float]] = []
        n = len(X)
        for epoch in range(self.max_epochs):
            order = torch.randperm(n, generator=gen).to(X.device)
            losses = []
            for i in range(0, n, self.batch_size):
                idx = order[i : i + self.batch_size]
                if len(idx) < 2:  # a batch of one breaks nothing but wastes a step
                    continue
                losses.append(self.train_step(X[idx], y[idx], opt))
            sched.step()
            val = self.validation_loss(X_val, y_val)
            self.history_.append(
                {
                    "epoch": epoch,
                    "train_loss": float(np.mean(losses)),
                    "valid_loss": val,
                }
            )
            if val < best - 1e-5:
                best, best_state, waited = (
                    val,
                    copy.deepcopy(self.module.state_dict()),
                    0,
                )
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
        w = max(width // (2**i), 16)
        layers += [nn.Linear(d, w), nn.ReLU(), nn.Dropout(dropout)]
        d = w
    layers.append(nn.Linear(d, n_out))
    return nn.Sequential(*layers)
