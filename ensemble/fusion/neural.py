"""Neural ("deep") fusion: a small network that gates the members per row."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._base import BaseFusion, log_odds

__all__ = ["NeuralFusion"]


def _gating_module(n_in: int, m: int, k: int, width: int, dropout: float) -> Any:
    import torch
    from torch import nn

    class GatingNet(nn.Module):
        """Row-wise softmax weights over members, mixing their predictions.

        The last layer starts at zero, so training starts from the plain
        average and moves away only where the inner validation split agrees.
        """

        def __init__(self) -> None:
            super().__init__()
            self.n_in, self.m, self.k = n_in, m, k
            last = nn.Linear(width, m)
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
            self.body = nn.Sequential(
                nn.Linear(n_in, width), nn.ReLU(), nn.Dropout(dropout), last
            )

        def weights(self, x: torch.Tensor) -> torch.Tensor:
            return torch.softmax(self.body(x[:, : self.n_in]), dim=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            w = self.weights(x)
            if self.k:
                P = x[:, self.n_in :].reshape(-1, self.m, self.k)
                fused = (w.unsqueeze(-1) * P).sum(dim=1)
                return torch.log(fused.clamp_min(1e-7))
            return (w * x[:, self.n_in :]).sum(dim=1, keepdim=True)

    return GatingNet()


class NeuralFusion(BaseFusion):
    """Per-row gating weights over members, learned by a small torch network.

    The gate sees the members' log-odds (or standardised predictions) and,
    with ``use_features=True``, the raw features, so it can trust different
    members in different regions of the input space. Trained with
    :class:`ensemble.nn.TorchTrainer` (AdamW, cosine decay, early stopping on an
    inner split).

    Parameters
    ----------
    use_features : bool, default=False
        Also feed the (standardised) raw features to the gate.
    width : int, default=32
        Hidden width; the gate only has to output a few weights.
    dropout : float, default=0.1
        Dropout in the gate.
    weight_decay : float, default=1e-3
        AdamW weight decay: strong, because OOF rows are few for a network.
    lr : float, default=3e-3
        Learning rate.
    max_epochs : int, default=60
        Upper bound on epochs; early stopping usually ends sooner.
    patience : int, default=8
        Epochs without inner-validation improvement before stopping.
    random_state : int, default=0
        Seeds initialisation, batch order and the inner split.

    Attributes
    ----------
    weights_ : ndarray of shape (n_members,)
        Mean gating weight of each member over the training rows.
    """

    def __init__(
        self,
        *,
        use_features: bool = False,
        width: int = 32,
        dropout: float = 0.1,
        weight_decay: float = 1e-3,
        lr: float = 3e-3,
        max_epochs: int = 60,
        patience: int = 8,
        random_state: int = 0,
    ) -> None:
        self.use_features = use_features
        self.width = width
        self.dropout = dropout
        self.weight_decay = weight_decay
        self.lr = lr
        self.max_epochs = max_epochs
        self.patience = patience
        self.random_state = random_state

    @property
    def uses_features(self) -> bool:
        """Whether the gate sees raw features."""
        return bool(self.use_features)

    def _inputs(self, P: np.ndarray, X: np.ndarray | None, fit: bool) -> np.ndarray:
        if P.ndim == 3:
            gate_in = log_odds(P)
            mixed = P.reshape(len(P), -1)
        else:
            if fit:
                self.p_mean_, self.p_std_ = float(P.mean()), float(P.std() or 1.0)
            gate_in = (P - self.p_mean_) / self.p_std_
            mixed = gate_in
        if X is not None:
            from ..learners._preprocess import OneHotScaler

            if fit:
                mask = (False,) * X.shape[1]
                self.scaler_ = OneHotScaler(mask, (0,) * X.shape[1]).fit(X)
            gate_in = np.hstack([gate_in, self.scaler_.transform(X)])
        self.n_gate_ = gate_in.shape[1]
        return np.hstack([gate_in, mixed]).astype(np.float32)

    def _fit(self, P: np.ndarray, y: np.ndarray, X: np.ndarray | None) -> None:
        import torch

        from ..learners._split import inner_split
        from ..nn import TorchTrainer

        torch.manual_seed(self.random_state)
        clf = P.ndim == 3
        Z = torch.as_tensor(self._inputs(P, X, fit=True))
        m, k = P.shape[1], (P.shape[2] if clf else 0)
        if clf:
            target = torch.as_tensor(y, dtype=torch.long)
        else:
            target = torch.as_tensor(
                (y - self.p_mean_) / self.p_std_, dtype=torch.float32
            )
        module = _gating_module(self.n_gate_, m, k, self.width, self.dropout)
        tr, va = inner_split(y, classify=clf, fraction=0.15, seed=self.random_state)
        trainer = TorchTrainer(
            module,
            loss="nll" if clf else "mse",
            lr=self.lr,
            weight_decay=self.weight_decay,
            batch_size=512,  # few parameters: larger batches train as well, faster
            max_epochs=self.max_epochs,
            patience=self.patience,
            seed=self.random_state,
        )
        trainer.fit_loop(Z[tr], target[tr], Z[va], target[va])
        self.module_ = module.eval()
        with torch.no_grad():
            self.weights_ = module.weights(Z).mean(dim=0).numpy().astype(float)

    def _predict(self, P: np.ndarray, X: np.ndarray | None) -> np.ndarray:
        from ..nn import infer

        out = infer(self.module_, self._inputs(P, X, fit=False))
        if P.ndim == 3:
            return np.exp(out)
        return out[:, 0] * self.p_std_ + self.p_mean_

    def __getstate__(self) -> dict[str, Any]:
        # The gating module is a local class: store its weights, rebuild on load.
        state = dict(self.__dict__)
        module = state.pop("module_", None)
        if module is not None:
            state["_module_state"] = {
                k: v.clone() for k, v in module.state_dict().items()
            }
            state["_module_shape"] = (module.n_in, module.m, module.k)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        module_state = state.pop("_module_state", None)
        shape = state.pop("_module_shape", None)
        self.__dict__.update(state)
        if module_state is not None and shape is not None:
            n_in, m, k = shape
            module = _gating_module(n_in, m, k, self.width, self.dropout)
            module.load_state_dict(module_state)
            self.module_ = module.eval()
