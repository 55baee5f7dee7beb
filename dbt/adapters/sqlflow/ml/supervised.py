"""Supervised learning on arrays: targets, held-out splits, class weights, metrics, and linear models
(linear and logistic regression) trained with Keras and kept as plain weight arrays."""

from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Sequence

import numpy as np

from dbt.adapters.sqlflow.errors import TargetError
from dbt.adapters.sqlflow.ml import keras_models
from dbt.adapters.sqlflow.ml.params import Fitting, Network, Split


def class_name(value) -> str:
    """A class as text, as PostgreSQL writes it: booleans are 'true' and 'false'."""
    return str(value).lower() if isinstance(value, (bool, np.bool_)) else str(value)


@dataclass
class Target:
    """The label column made numeric: float values (regression) or class indices (classification)."""

    task: str  # regression | binary | multiclass
    y: np.ndarray
    classes: Optional[List] = None

    @classmethod
    def of(
        cls, values: np.ndarray, nulls: Optional[np.ndarray], classification: bool, label: str
    ) -> "Target":
        if nulls is not None and nulls.any():
            raise TargetError(
                f'label column "{label}" has {int(nulls.sum())} NULL values; filter them out '
                f"in the SELECT (where {label} is not null)."
            )
        if not classification:
            if values.dtype.kind not in "iuf":
                raise TargetError(
                    f'label column "{label}" is {values.dtype.kind == "O" and "text" or values.dtype}; '
                    f"linear_regression needs a numeric label."
                )
            return cls("regression", values.astype(np.float64))
        classes, y = np.unique(values, return_inverse=True)
        if len(classes) < 2:
            raise TargetError(
                f'label column "{label}" has a single class ({classes[0]!r}); a classifier needs '
                f"at least two."
            )
        return cls(
            "binary" if len(classes) == 2 else "multiclass",
            y.astype(np.int64),
            [c.item() if isinstance(c, np.generic) else c for c in classes],
        )


def held_out_mask(
    n_rows: int,
    split: Split,
    order: Optional[np.ndarray] = None,
    flag: Optional[np.ndarray] = None,
) -> np.ndarray:
    """True for rows held out for evaluation: a seeded random fraction, the last fraction in key order
    (`seq`), or the rows where a boolean column is true."""
    if flag is not None:
        return flag.astype(bool)
    fraction = split.validation_split or 0.0
    held = np.zeros(n_rows, bool)
    count = int(round(n_rows * fraction))
    if count == 0:
        return held
    if split.data_split == "seq":
        ranks = np.argsort(order if order is not None else np.arange(n_rows), kind="stable")
        held[ranks[-count:]] = True
    else:
        held[np.random.default_rng(split.seed).permutation(n_rows)[:count]] = True
    return held


def per_class_weights(counts: np.ndarray, setting, classes: Sequence) -> Optional[np.ndarray]:
    """`class_weight` per class: 'balanced' (n / (k * count)) or a map of class to weight (default 1)."""
    if setting is None:
        return None
    if setting == "balanced":
        return counts.sum() / (len(counts) * np.maximum(counts, 1))
    by_name = {str(k): float(v) for k, v in setting.items()}
    return np.array([by_name.get(class_name(c), by_name.get(str(c), 1.0)) for c in classes])


def class_weights(
    y: np.ndarray, n_classes: int, setting, classes: Sequence
) -> Optional[np.ndarray]:
    """Per-row sample weights for `class_weight`."""
    per_class = per_class_weights(np.bincount(y, minlength=n_classes), setting, classes)
    return None if per_class is None else per_class[y]


def metrics(task: str, y: np.ndarray, output: np.ndarray) -> Dict[str, float]:
    """Regression: MSE, MAE, R2. Classification: accuracy, precision, recall, F1 (binary: of the second
    class; multiclass: macro averages), log loss and ROC AUC."""
    from sklearn import metrics as m

    if len(y) == 0:
        return {}
    if task == "regression":
        return {
            "mse": float(m.mean_squared_error(y, output)),
            "mae": float(m.mean_absolute_error(y, output)),
            "r2": float(m.r2_score(y, output)) if len(y) > 1 else None,
        }
    probabilities = output
    predicted = probabilities.argmax(axis=1)
    average = "binary" if task == "binary" else "macro"
    labels = list(range(probabilities.shape[1]))
    out = {
        "accuracy": float(m.accuracy_score(y, predicted)),
        "precision": float(m.precision_score(y, predicted, average=average, zero_division=0)),
        "recall": float(m.recall_score(y, predicted, average=average, zero_division=0)),
        "f1": float(m.f1_score(y, predicted, average=average, zero_division=0)),
        "log_loss": float(m.log_loss(y, probabilities, labels=labels)),
    }
    if len(np.unique(y)) == probabilities.shape[1]:
        out["roc_auc"] = float(
            m.roc_auc_score(y, probabilities[:, 1])
            if task == "binary"
            else m.roc_auc_score(y, probabilities, multi_class="ovr", labels=labels)
        )
    return out


def evaluation(
    task: str, y: np.ndarray, output: np.ndarray, points: int = 200, sample: int = 1000
):
    """What a model card draws of the held-out rows: a classifier's confusion matrix (the most likely
    class, so 0.5 for two classes) and, for two classes, its ROC curve (at most `points` points); a
    regressor's (actual, predicted) for up to `sample` rows, evenly spaced in row order."""
    if len(y) == 0 or task == "autoencoder":
        return {}
    if task == "regression":
        step = max(1, int(np.ceil(len(y) / sample)))
        return {"actual": y[::step].tolist(), "predicted": output.ravel()[::step].tolist()}
    from sklearn import metrics as m

    n = output.shape[1]
    out = {
        "confusion": m.confusion_matrix(y, output.argmax(axis=1), labels=list(range(n))).tolist()
    }
    if task == "binary" and len(np.unique(y)) == 2:
        fpr, tpr, _ = m.roc_curve(y, output[:, 1])
        keep = np.unique(np.linspace(0, len(fpr) - 1, min(points, len(fpr))).round().astype(int))
        out["roc"] = {"fpr": fpr[keep].tolist(), "tpr": tpr[keep].tolist()}
    return out


@dataclass
class LinearModel:
    """decision = X @ kernel + bias, on encoded (normalized) features."""

    task: str
    kernel: np.ndarray  # (features, outputs)
    bias: np.ndarray  # (outputs,)
    classes: Optional[List] = None
    history: keras_models.History = field(default_factory=keras_models.History)

    def decision(self, X: np.ndarray) -> np.ndarray:
        return X @ self.kernel + self.bias

    def output(self, X: np.ndarray) -> np.ndarray:
        """Regression: the prediction. Classification: class probabilities (rows sum to 1)."""
        z = self.decision(X)
        if self.task == "regression":
            return z[:, 0]
        if self.task == "binary":
            p = 1.0 / (1.0 + np.exp(-z[:, 0]))
            return np.column_stack([1.0 - p, p])
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)


@dataclass
class KerasModel:
    """A network kept as `.keras` bytes (loaded with safe_mode) plus its arrays for the weights table."""

    task: str  # regression | binary | multiclass | autoencoder
    artifact: bytes
    weights: List[tuple]
    classes: Optional[List] = None
    history: keras_models.History = field(default_factory=keras_models.History)
    shift: float = 0.0  # regression targets are trained standardized: y = shift + spread * output
    spread: float = 1.0

    def _load(self, keras):
        return keras_models.from_bytes(keras, self.artifact)

    def output(self, X: np.ndarray) -> np.ndarray:
        """As LinearModel.output; autoencoders give the reconstruction."""
        with keras_models.tensorflow_session(0) as keras:
            return self.predictor(keras)(X)

    def predictor(self, keras) -> Callable[[np.ndarray], np.ndarray]:
        """X -> output with the network loaded once, for callers that score many small arrays
        (SHAP); call it inside the tensorflow_session that gave `keras`."""
        from dbt.adapters.sqlflow.ml import networks

        networks.register_layers(keras)  # registered before loading
        model = self._load(keras)

        def output(X: np.ndarray) -> np.ndarray:
            raw = keras_models.predict(model, X)
            if self.task == "regression":
                return raw[:, 0] * self.spread + self.shift
            if self.task == "binary":
                return np.column_stack([1.0 - raw[:, 0], raw[:, 0]])
            return raw

        return output

    def embedding(self, X: np.ndarray) -> np.ndarray:
        with keras_models.tensorflow_session(0) as keras:
            from dbt.adapters.sqlflow.ml import networks

            return networks.embed(keras, self._load(keras), X)


def _setup(target: Target, train: np.ndarray, class_weight):
    """(outputs, output activation, loss, y as trained, sample weights, shift, spread) for the task."""
    n_out = 1 if target.task in ("regression", "binary") else len(target.classes)
    activation = {"regression": None, "binary": "sigmoid", "multiclass": "softmax"}[target.task]
    loss = {
        "regression": "mse",
        "binary": "binary_crossentropy",
        "multiclass": "sparse_categorical_crossentropy",
    }[target.task]
    y = target.y.astype(np.float32 if target.task != "multiclass" else np.int64)
    shift, spread, weights = 0.0, 1.0, None
    if target.task == "regression":  # a standardized target converges in far fewer steps
        shift, spread = float(target.y[train].mean()), float(target.y[train].std() or 1.0)
        y = ((target.y - shift) / spread).astype(np.float32)
    else:
        weights = class_weights(target.y[train], len(target.classes), class_weight, target.classes)
    return n_out, activation, loss, y, weights, shift, spread


def _build(keras, network: Network, n_inputs: int, n_out: int, activation: Optional[str]):
    from dbt.adapters.sqlflow.ml import networks

    if network.model_type == "autoencoder":
        return networks.build_autoencoder(
            keras, n_inputs, network.encode_units, network.activation
        )
    if network.model_type in ("linear_regression", "logistic_regression"):
        return keras_models.build_linear(
            keras, n_inputs, n_out, activation, network.l1 or 0.0, network.l2 or 0.0
        )
    if network.model_type == "factorization_machine":
        return networks.build_fm(keras, n_inputs, activation, network)
    return networks.build_dnn(keras, n_inputs, n_out, activation, network)


def _finish(model, model_type: str, task: str, classes, history, shift: float, spread: float):
    """LinearModel arrays for linear types (weights scaled back to the target's units), else KerasModel."""
    from dbt.adapters.sqlflow.ml import networks

    if model_type in ("linear_regression", "logistic_regression"):
        kernel, bias = keras_models.dense_weights(model)
        return LinearModel(task, kernel * spread, bias * spread + shift, classes, history)
    return KerasModel(
        task,
        keras_models.to_bytes(model),
        networks.layer_weights(model),
        classes,
        history,
        shift,
        spread,
    )


def train(
    X: np.ndarray,
    target: Optional[Target],
    held: np.ndarray,
    network: Network,
    fitting: Fitting,
    class_weight=None,
):
    """Train `network` on an in-memory matrix; held rows are the validation data."""
    model_type = network.model_type
    train_rows, test_rows = ~held, held
    with keras_models.tensorflow_session(fitting.seed) as keras:
        if model_type == "autoencoder":
            n_out, activation, loss, y, weights, shift, spread = (
                0,
                None,
                "mse",
                X.astype(np.float32),
                None,
                0.0,
                1.0,
            )
        else:
            n_out, activation, loss, y, weights, shift, spread = _setup(
                target, train_rows, class_weight
            )
        model = _build(keras, network, X.shape[1], n_out, activation)
        validation = (X[test_rows].astype(np.float32), y[test_rows]) if test_rows.any() else None
        history = keras_models.fit(
            keras,
            model,
            X[train_rows].astype(np.float32),
            y[train_rows],
            loss,
            fitting,
            validation,
            weights,
        )
        task = "autoencoder" if target is None else target.task
        return _finish(
            model,
            model_type,
            task,
            None if target is None else target.classes,
            history,
            shift,
            spread,
        )


@dataclass
class StreamSpec:
    """What a streamed fit knows before it starts, from one pass over the data."""

    task: str
    classes: Optional[List]
    shift: float
    spread: float
    class_counts: Optional[np.ndarray]
    train_steps: int
    held_steps: int
    train_rows: int = 0
    held_rows: int = 0


def train_streaming(
    batches: Callable[[bool], Iterable[tuple]],
    n_inputs: int,
    spec: StreamSpec,
    network: Network,
    fitting: Fitting,
    class_weight=None,
):
    """Train from batches that are read again for every epoch: `batches(held)` yields (X, y) of the
    training rows (held=False) or the held-out rows (held=True), already encoded; memory holds one."""
    model_type = network.model_type
    n_out = 1 if spec.task in ("regression", "binary", "autoencoder") else len(spec.classes)
    activation = {
        "regression": None,
        "binary": "sigmoid",
        "multiclass": "softmax",
        "autoencoder": None,
    }[spec.task]
    loss = {
        "regression": "mse",
        "binary": "binary_crossentropy",
        "multiclass": "sparse_categorical_crossentropy",
        "autoencoder": "mse",
    }[spec.task]
    per_class = None
    if spec.task in ("binary", "multiclass"):
        per_class = per_class_weights(spec.class_counts, class_weight, spec.classes)
    size, seed = fitting.batch_size, fitting.seed

    def minibatches(held: bool):
        rng = np.random.default_rng(seed)
        while True:  # Keras draws steps_per_epoch batches per epoch from an endless stream
            for X, y in batches(held):
                order = rng.permutation(len(X)) if not held else np.arange(len(X))
                for start in range(0, len(X), size):
                    pick = order[start : start + size]
                    if per_class is not None and not held:
                        yield X[pick].astype(np.float32), y[pick], per_class[y[pick].astype(int)]
                    else:
                        yield X[pick].astype(np.float32), y[pick]

    with keras_models.tensorflow_session(seed) as keras:
        model = _build(keras, network, n_inputs, n_out, activation)
        validation = minibatches(True) if spec.held_steps else None
        history = keras_models.fit_stream(
            keras,
            model,
            minibatches(False),
            spec.train_steps,
            loss,
            fitting,
            validation,
            spec.held_steps,
        )
        return _finish(
            model, model_type, spec.task, spec.classes, history, spec.shift, spec.spread
        )
