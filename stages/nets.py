"""Small torch classifiers and the minibatch SGD loop that label-noise studies train them with.

Rolnick et al. (2017) make claims about deep networks trained by SGD: how noisy labels mix inside a
minibatch is what their batch-size argument is about. So the loop here samples real minibatches from
the full diluted training set (every noisy copy is a row of its own), scales the learning rate with
the batch size, and trains for a fixed number of examples seen whatever alpha or the batch size is.

Stopping: the loop evaluates the cross-entropy on a *noisy* validation set (held-out rows diluted like
the training set) and keeps the weights with the lowest noisy-validation loss. A clean validation set
would be a label oracle the studied setting does not have. Under heavy noise, accuracy on noisy labels
barely moves with clean accuracy (at alpha = 50 a perfect classifier scores about 0.12 against 0.10 for
chance), while the loss still tracks how much of the per-input label distribution was learnt.

Why not `stages.scaling.training.train` (the scaling studies' loop, also used by the LSTM generator):
that loop is AdamW at a fixed learning rate with early stopping by patience, which is right for a
scaling curve (each point at its best validation loss). The studied claim here is about SGD: momentum,
a learning rate scaled with the batch size, a cosine schedule and a fixed budget of examples seen, so
that batch size and alpha change nothing but the noise inside a minibatch. Stopping early by patience
would make the budget depend on alpha. Both loops keep the best weights by validation loss.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

MODELS = ("mlp", "convnet", "bag_of_embeddings")


@dataclass
class TrainConfig:
    """One run's optimisation settings (the lr given is for `base_batch_size`, scaled linearly)."""

    batch_size: int = 64
    base_batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 1e-4
    examples: int = 150_000
    evaluations: int = 12

    @property
    def scaled_lr(self) -> float:
        return self.lr * self.batch_size / self.base_batch_size

    @property
    def steps(self) -> int:
        return max(1, self.examples // self.batch_size)


@dataclass
class TrainResult:
    predict: Callable[[np.ndarray], np.ndarray]
    best_step: int
    steps: int
    best_val_accuracy: float


def build_model(kind: str, n_features: int, n_classes: int, vocab_size: int = 0, hidden: int = 128):
    """A fresh classifier. `convnet` needs square images (n_features a perfect square)."""
    import torch
    from torch import nn

    if kind == "mlp":
        return nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                             nn.Linear(hidden, n_classes))
    if kind == "convnet":
        side = int(round(n_features ** 0.5))
        if side * side != n_features:
            raise ValueError(f"convnet needs square images; {n_features} features is not a square")

        class ConvNet(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.body = nn.Sequential(
                    nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
                    nn.MaxPool2d(2), nn.Flatten(), nn.Linear(32 * (side // 2) ** 2, hidden), nn.ReLU(),
                    nn.Linear(hidden, n_classes))

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return self.body(x.view(-1, 1, side, side))

        return ConvNet()
    if kind == "bag_of_embeddings":

        class BagOfEmbeddings(nn.Module):
            """Mean of word embeddings (an EmbeddingBag over padded token ids), then an MLP."""

            def __init__(self) -> None:
                super().__init__()
                self.bag = nn.EmbeddingBag(vocab_size + 1, 64, mode="mean", padding_idx=0)
                self.head = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, n_classes))

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return self.head(self.bag(x.long()))

        return BagOfEmbeddings()
    raise ValueError(f"unknown model {kind!r}; choose one of {MODELS}")


def train_classifier(
    kind: str, x: np.ndarray, rows: np.ndarray, labels: np.ndarray, val_rows: np.ndarray, val_labels: np.ndarray,
    n_classes: int, config: TrainConfig, seed: int, vocab_size: int = 0,
) -> TrainResult:
    """Minibatch SGD on the rows `x[rows]` labelled `labels` (a diluted set: rows repeat with other labels).

    Returns a predictor holding the weights with the lowest loss on (x[val_rows], val_labels).
    """
    import torch
    from torch import nn

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = build_model(kind, x.shape[1], n_classes, vocab_size=vocab_size)
    opt = torch.optim.SGD(model.parameters(), lr=config.scaled_lr, momentum=config.momentum,
                          weight_decay=config.weight_decay)
    steps = config.steps
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    dtype = torch.long if kind == "bag_of_embeddings" else torch.float32
    features = torch.as_tensor(np.array(x), dtype=dtype)
    targets = torch.as_tensor(np.array(labels), dtype=torch.long)
    val_x, val_y = features[torch.as_tensor(np.array(val_rows))], torch.as_tensor(np.array(val_labels))
    loss_fn = nn.CrossEntropyLoss()
    checkpoints = set(np.linspace(steps / config.evaluations, steps, config.evaluations).astype(int).tolist())
    best: tuple = (-1.0, 0, None, float("inf"))
    # One permutation per pass over the diluted set: every noisy copy is seen once per pass.
    order = rng.permutation(rows.size)
    cursor = 0
    for step in range(1, steps + 1):
        if cursor + config.batch_size > order.size:
            order, cursor = rng.permutation(rows.size), 0
        pick = order[cursor: cursor + config.batch_size]
        cursor += config.batch_size
        model.train()
        opt.zero_grad()
        loss = loss_fn(model(features[torch.as_tensor(rows[pick])]), targets[torch.as_tensor(pick)])
        loss.backward()
        opt.step()
        sched.step()
        if step in checkpoints:
            model.eval()
            with torch.no_grad():
                logits = model(val_x)
                val_loss = float(loss_fn(logits, val_y))
                acc = float((logits.argmax(1) == val_y).float().mean())
            if best[2] is None or val_loss < best[3]:
                best = (acc, step, {k: v.clone() for k, v in model.state_dict().items()}, val_loss)
    model.load_state_dict(best[2])
    model.eval()

    def predict(xs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.as_tensor(xs, dtype=dtype)).argmax(1).numpy()

    return TrainResult(predict=predict, best_step=best[1], steps=steps, best_val_accuracy=best[0])
