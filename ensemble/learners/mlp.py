"""A PyTorch MLP for tables, trained by :class:`ensemble.nn.TorchTrainer`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..nn import TorchTrainer, build_mlp
from ._base import Learner, register
from ._preprocess import OneHotScaler
from ._split import inner_split


def _torch() -> Any:
    import torch

    return torch


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

    search_space: ClassVar[dict[str, tuple[Any, ...]]] = {
        "width": ("choice", [64, 128, 256, 512]),
        "depth": ("int", 1, 3),
        "dropout": ("uniform", 0.0, 0.4),
        "weight_decay": ("loguniform", 1e-6, 1e-2),
        "lr": ("loguniform", 3e-4, 1e-2),
    }

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        torch = _torch()
        ctx = self.context
        p = self.params
        torch.manual_seed(ctx.seed)
        torch.set_num_threads(max(1, ctx.n_threads))
        device = "cuda" if ctx.device == "cuda" and torch.cuda.is_available() else "cpu"
        if device == "cuda":
            _deterministic_cuda(torch)
        self.pre_ = OneHotScaler(ctx.cat_mask, ctx.n_categories).fit(X)
        Z = self.pre_.transform(X)
        if ctx.is_classification:
            target = torch.as_tensor(y, dtype=torch.long)
            n_out, loss = ctx.n_classes, "ce"
            self.y_mean_, self.y_std_ = 0.0, 1.0
        else:
            self.y_mean_, self.y_std_ = float(y.mean()), float(y.std() or 1.0)
            target = torch.as_tensor(
                (y - self.y_mean_) / self.y_std_, dtype=torch.float32
            )
            n_out, loss = 1, "mse"
        self.arch_ = {
            "n_in": Z.shape[1],
            "n_out": n_out,
            "width": int(p["width"]),
            "depth": int(p["depth"]),
            "dropout": float(p["dropout"]),
        }
        module = build_mlp(**self.arch_).to(device)
        tr, va = inner_split(
            y, classify=ctx.is_classification, fraction=0.1, seed=ctx.seed
        )
        Zt = torch.as_tensor(Z, device=device)
        target = target.to(device)
        trainer = TorchTrainer(
            module,
            loss=loss,
            lr=float(p["lr"]),
            weight_decay=float(p["weight_decay"]),
            batch_size=int(p["batch_size"]),
            max_epochs=int(p["max_epochs"]),
            patience=int(p["patience"]),
            seed=ctx.seed,
            device=device,
        )
        idx_tr, idx_va = (
            torch.as_tensor(tr, device=device),
            torch.as_tensor(va, device=device),
        )
        trainer.fit_loop(Zt[idx_tr], target[idx_tr], Zt[idx_va], target[idx_va])
        self.history_ = trainer.history_
        self.model_ = module.to("cpu").eval()

    def _predict(self, X: np.ndarray) -> np.ndarray:
        torch = _torch()
        Z = torch.as_tensor(self.pre_.transform(X))
        with torch.no_grad():
            out = torch.cat(
                [self.model_(Z[i : i + 8192]) for i in range(0, len(Z), 8192)]
            )
        if self.context.is_classification:
            return torch.softmax(out, dim=1).numpy()
        return out.squeeze(-1).numpy() * self.y_std_ + self.y_mean_

    def _save(self, path: Path) -> None:
        import joblib

        torch = _torch()
        torch.save(
            {
                "state_dict": self.model_.state_dict(),
                "arch": self.arch_,
                "y_mean": self.y_mean_,
                "y_std": self.y_std_,
            },
            path,
        )
        joblib.dump(self.pre_, path.with_suffix(".pre.joblib"))

    def _load(self, path: Path) -> None:
        import joblib

        torch = _torch()
        blob = torch.load(path, map_location="cpu", weights_only=True)
        self.arch_, self.y_mean_, self.y_std_ = (
            blob["arch"],
            blob["y_mean"],
            blob["y_std"],
        )
        self.model_ = build_mlp(**self.arch_)
        self.model_.load_state_dict(blob["state_dict"])
        self.model_.eval()
        self.pre_ = joblib.load(path.with_suffix(".pre.joblib"))


def _deterministic_cuda(torch: Any) -> None:
    """Ask CUDA for repeatable kernels (same GPU model and driver ⇒ same model).

    cuBLAS needs a fixed workspace for deterministic matmuls; the variable is
    read when the first handle is created, so it is set before any CUDA work in
    this process. Ops without a deterministic kernel warn instead of failing.
    GPU results still differ from CPU ones in the last bits (other kernels).
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True, warn_only=True)
