"""Hyperparameters as typed records, one per concern. The jobs build them from the resolved options,
where every default is written once (options.py); the ml layer reads attributes, never a config dict.
A field that does not apply to a model type is None."""

from dataclasses import dataclass, fields
from typing import Any, Mapping, Optional, Sequence, Tuple, Type, TypeVar

R = TypeVar("R")


def from_options(record: Type[R], options: Mapping[str, Any], **overrides: Any) -> R:
    """The record's fields read from the resolved options, by name."""
    values = {f.name: options.get(f.name) for f in fields(record)}  # type: ignore[arg-type]
    return record(**{**values, **overrides})


@dataclass(frozen=True)
class Network:
    """The layers of a TensorFlow model."""

    model_type: str
    l1: Optional[float] = None
    l2: Optional[float] = None
    n_factors: Optional[int] = None  # factorization_machine
    hidden_units: Optional[Sequence[int]] = None  # dnn_*
    dropout: Optional[float] = None  # dnn_*
    activation: Optional[str] = None  # dnn_*, autoencoder, dec
    encode_units: Optional[Sequence[int]] = None  # autoencoder, dec
    # dnn_*: (encoded input columns, dim) per SQLFlow EMBEDDING column, set by the job
    embeddings: Optional[Sequence[Tuple[Sequence[int], int]]] = None


@dataclass(frozen=True)
class Fitting:
    """How Keras fits a network: optimizer, steps and stopping."""

    learning_rate: float
    epochs: int
    batch_size: int
    seed: int
    optimizer: str = "adam"  # dec trains with Adam, as Xie et al.; the others set it in config
    early_stopping: Optional[int] = None  # patience in epochs; None or 0 = off


@dataclass(frozen=True)
class Split:
    """Which rows are held out for evaluation."""

    validation_split: Optional[float]
    data_split: Optional[str]
    seed: int


@dataclass(frozen=True)
class Dec:
    """Deep embedded clustering (Xie et al.): pretraining, the clustering phase and its restarts."""

    seed: int
    learning_rate: float
    epochs: int
    batch_size: int
    encode_units: Sequence[int]
    activation: str
    k_range: Sequence[int]
    n_init: int
    run_pretrain: bool
    pretrain_epochs: int
    restarts: int
    update_interval: int
    tol: Optional[float] = None
    max_iter: Optional[int] = None
