"""A small, reusable torch training loop for the scaling studies.

Scaling curves compare models trained on different amounts of data, so how each one is stopped is
part of the measurement. Here every run trains by minibatch steps and is evaluated on a fixed
validation set every `eval_every` steps; it stops after `patience` evaluations without improvement
(or at `max_steps`) and the best weights are restored, so each point of a curve is the model at its
best validation loss, never an arbitrarily under- or over-trained one. `TrainResult.stopped_by`
records which rule ended it. Runs are deterministic: one thread, seeded initialisation and a seeded
generator for the minibatch order.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

LossFn = Callable[..., "torch.Tensor"]  # noqa: F821 - (model, *batch) -> mean loss


@dataclass
class TrainConfig:
    """How one run is trained and stopped."""

    learning_rate: float = 1e-3
    batch_size: int = 64
    max_steps: int = 3000
    eval_every: int = 50
    patience: int = 5
    weight_decay: float = 0.0


@dataclass
class TrainResult:
    best_validation_loss: float
    steps: int
    best_step: int
    stopped_by: str  # 'patience' or 'max_steps'
    history: list[tuple[int, float]] = field(default_factory=list)


def seed_everything(seed: int) -> None:
    """A fixed seed for initialisation: with `one_thread`, the same run gives the same weights."""
    import torch

    torch.manual_seed(seed % (2**63))


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Train on one thread (small models only contend on a busy machine), then restore torch's setting."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def parameter_count(model) -> int:
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad))


def mlp(inputs: int, hidden: Sequence[int], outputs: int):
    """Fully connected ReLU network; `model.features(x)` gives the last hidden layer."""
    import torch
    from torch import nn

    class MLP(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            layers: list[nn.Module] = []
            width = inputs
            for h in hidden:
                layers += [nn.Linear(width, h), nn.ReLU()]
                width = h
            self.body = nn.Sequential(*layers)
            self.head = nn.Linear(width, outputs)

        def features(self, x: torch.Tensor) -> torch.Tensor:
            return self.body(x)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.body(x))

    return MLP()


def evaluate(model, loss_fn: LossFn, tensors: Sequence, batch_size: int = 4096) -> float:
    """Mean loss over a whole data set (weighted by batch size), without gradients."""
    import torch

    model.eval()
    total, count = 0.0, 0
    n = len(tensors[0])
    with torch.no_grad():
        for start in range(0, n, batch_size):
            batch = [t[start:start + batch_size] for t in tensors]
            total += float(loss_fn(model, *batch)) * len(batch[0])
            count += len(batch[0])
    model.train()
    return total / max(count, 1)


def train(model, loss_fn: LossFn, train_tensors: Sequence, validation_tensors: Sequence, config: TrainConfig,
          seed: int) -> TrainResult:
    """Minibatch Adam with early stopping on the validation loss; the best weights are kept in `model`."""
    import torch

    optimiser = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(seed % (2**63))
    n = len(train_tensors[0])
    batch = min(config.batch_size, n)
    best = math.inf
    best_state = copy.deepcopy(model.state_dict())
    best_step, waited, step = 0, 0, 0
    history: list[tuple[int, float]] = []
    order = torch.randperm(n, generator=generator)
    cursor = 0
    model.train()
    stopped_by = "max_steps"
    while step < config.max_steps:
        if cursor + batch > n:
            order, cursor = torch.randperm(n, generator=generator), 0
        pick = order[cursor:cursor + batch]
        cursor += batch
        optimiser.zero_grad(set_to_none=True)
        loss = loss_fn(model, *[t[pick] for t in train_tensors])
        loss.backward()
        optimiser.step()
        step += 1
        if step % config.eval_every == 0 or step == config.max_steps:
            current = evaluate(model, loss_fn, validation_tensors)
            history.append((step, current))
            if current < best - 1e-6:
                best, best_step, waited = current, step, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                waited += 1
                if waited >= config.patience:
                    stopped_by = "patience"
                    break
    model.load_state_dict(best_state)
    return TrainResult(best_validation_loss=best, steps=step, best_step=best_step, stopped_by=stopped_by,
                       history=history)


def as_tensors(*arrays: np.ndarray) -> list:
    """NumPy arrays as torch tensors (float32 for floats, int64 for integers)."""
    import torch

    out = []
    for a in arrays:
        a = np.ascontiguousarray(a)
        out.append(torch.from_numpy(a.astype(np.float32 if a.dtype.kind == "f" else np.int64, copy=False)))
    return out
