"""Steps shared by the training loops of both models."""

from __future__ import annotations

import logging
import time

import numpy as np

from ecrs.paddle_runtime import paddle

logger = logging.getLogger(__name__)


def adam(
    model: paddle.nn.Layer, learning_rate: float, weight_decay: float
) -> paddle.optimizer.Adam:
    return paddle.optimizer.Adam(
        learning_rate=learning_rate,
        parameters=model.parameters(),
        weight_decay=weight_decay,
    )


def apply_gradients(
    optimizer: paddle.optimizer.Optimizer, loss: paddle.Tensor
) -> float:
    """Backpropagate ``loss``, update the parameters and return the loss value."""
    loss.backward()
    optimizer.step()
    optimizer.clear_grad()
    return float(loss)


def log_epoch(
    model: str,
    epoch: int,
    epochs: int,
    losses: list[float],
    examples: int,
    started: float,
) -> float:
    """Log an epoch's mean loss and throughput and return the mean loss.

    ``started`` is a ``time.perf_counter()`` value from the epoch's start.
    """
    elapsed = time.perf_counter() - started
    mean_loss = float(np.mean(losses)) if losses else float("nan")
    logger.info(
        "%s epoch %d/%d: loss %.4f, %.0f examples/s",
        model,
        epoch,
        epochs,
        mean_loss,
        examples / elapsed,
    )
    return mean_loss
