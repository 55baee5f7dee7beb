"""Keras networks beyond one dense layer: factorization machines, DNNs and autoencoders.

Every layer is a stock Keras layer or one of the registered layers below (FactorizationMachine,
EmbeddedInputs), so a saved `.keras` file loads back with safe_mode=True (no Lambda, no pickled code).
"""

from typing import List, Optional, Sequence

import numpy as np

from dbt.adapters.sqlflow.ml.params import Network

_FM_CLASS = None
_EMBEDDED_CLASS = None


def factorization_machine_layer(keras):
    """Rendle's pairwise term: 0.5 * sum_f ((x V)_f^2 - (x^2 V^2)_f), created once per process."""
    global _FM_CLASS
    if _FM_CLASS is None:

        @keras.saving.register_keras_serializable(
            package="dbt_sqlflow", name="FactorizationMachine"
        )
        class FactorizationMachine(keras.layers.Layer):
            def __init__(self, n_factors: int, l2: float = 0.0, **kwargs):
                super().__init__(**kwargs)
                self.n_factors, self.l2 = n_factors, l2

            def build(self, input_shape):
                regularizer = keras.regularizers.L2(self.l2) if self.l2 else None
                self.factors = self.add_weight(
                    name="factors",
                    shape=(input_shape[-1], self.n_factors),
                    initializer=keras.initializers.RandomNormal(stddev=0.01),
                    regularizer=regularizer,
                )

            def call(self, x):
                ops = keras.ops
                xv = ops.matmul(x, self.factors)
                x2v2 = ops.matmul(ops.square(x), ops.square(self.factors))
                return 0.5 * ops.sum(ops.square(xv) - x2v2, axis=-1, keepdims=True)

            def get_config(self):
                return {**super().get_config(), "n_factors": self.n_factors, "l2": self.l2}

        _FM_CLASS = FactorizationMachine
    return _FM_CLASS


def embedded_inputs_layer(keras):
    """The input columns with each embedded block (a categorical's one-hot or multi-hot columns)
    replaced by its `dim` learned numbers: block @ E, a lookup of each id's row of E, summed over a
    row's ids (SQLFlow's EMBEDDING with combiner sum; one id per row needs no combining)."""
    global _EMBEDDED_CLASS
    if _EMBEDDED_CLASS is None:

        @keras.saving.register_keras_serializable(package="dbt_sqlflow", name="EmbeddedInputs")
        class EmbeddedInputs(keras.layers.Layer):
            def __init__(self, blocks, dims, n_inputs: int, **kwargs):
                super().__init__(**kwargs)
                self.blocks = [list(map(int, b)) for b in blocks]
                self.dims, self.n_inputs = [int(d) for d in dims], int(n_inputs)
                embedded = {j for b in self.blocks for j in b}
                self.rest = [j for j in range(self.n_inputs) if j not in embedded]

            def build(self, input_shape):
                self.tables = [
                    self.add_weight(
                        name=f"embedding_{i}",
                        shape=(len(block), dim),
                        initializer=keras.initializers.RandomNormal(stddev=1.0 / np.sqrt(dim)),
                    )
                    for i, (block, dim) in enumerate(zip(self.blocks, self.dims))
                ]

            def call(self, x):
                ops = keras.ops
                parts = [ops.take(x, self.rest, axis=1)] if self.rest else []
                parts += [
                    ops.matmul(ops.take(x, block, axis=1), table)
                    for block, table in zip(self.blocks, self.tables)
                ]
                return ops.concatenate(parts, axis=1)

            def get_config(self):
                return {
                    **super().get_config(),
                    "blocks": self.blocks,
                    "dims": self.dims,
                    "n_inputs": self.n_inputs,
                }

        _EMBEDDED_CLASS = EmbeddedInputs
    return _EMBEDDED_CLASS


def register_layers(keras) -> None:
    """Our layers, registered before a stored network is loaded."""
    factorization_machine_layer(keras)
    embedded_inputs_layer(keras)


def _regularizer(keras, network: Network):
    l1, l2 = network.l1 or 0.0, network.l2 or 0.0
    return keras.regularizers.L1L2(l1=l1, l2=l2) if (l1 or l2) else None


def build_fm(keras, n_inputs: int, activation: Optional[str], network: Network):
    inputs = keras.Input(shape=(n_inputs,), name="features")
    linear = keras.layers.Dense(1, kernel_regularizer=_regularizer(keras, network), name="linear")(
        inputs
    )
    pairwise = factorization_machine_layer(keras)(
        network.n_factors, network.l2 or 0.0, name="pairwise"
    )(inputs)
    logit = keras.layers.Add(name="sum")([linear, pairwise])
    outputs = keras.layers.Activation(activation or "linear", name="output")(logit)
    return keras.Model(inputs, outputs)


def build_dnn(keras, n_inputs: int, n_outputs: int, activation: Optional[str], network: Network):
    x = inputs = keras.Input(shape=(n_inputs,), name="features")
    if network.embeddings:
        blocks, dims = zip(*network.embeddings)
        x = embedded_inputs_layer(keras)(blocks, dims, n_inputs, name="embeddings")(x)
    for i, units in enumerate(network.hidden_units):
        x = keras.layers.Dense(
            units,
            activation=network.activation,
            name=f"hidden_{i}",
            kernel_regularizer=_regularizer(keras, network),
        )(x)
        if network.dropout:
            x = keras.layers.Dropout(network.dropout, name=f"dropout_{i}")(x)
    outputs = keras.layers.Dense(n_outputs, activation=activation, name="output")(x)
    return keras.Model(inputs, outputs)


def build_autoencoder(keras, n_inputs: int, units: Sequence[int], activation: str):
    """Encoder: `units` with `activation`, the last (the embedding) linear; decoder mirrored."""
    units = list(units)
    x = inputs = keras.Input(shape=(n_inputs,), name="features")
    for i, width in enumerate(units[:-1]):
        x = keras.layers.Dense(width, activation=activation, name=f"encoder_{i}")(x)
    x = keras.layers.Dense(units[-1], name="embedding")(x)
    for i, width in enumerate(reversed(units[:-1])):
        x = keras.layers.Dense(width, activation=activation, name=f"decoder_{i}")(x)
    outputs = keras.layers.Dense(n_inputs, name="reconstruction")(x)
    return keras.Model(inputs, outputs)


def layer_weights(model) -> List[tuple]:
    """(layer, weight name, array, whether its first axis runs over the input features), in layer order."""
    out = []
    features = model.inputs[0]
    for layer in model.layers:
        reads_features = (
            any(
                t is features
                for t in (layer.input if isinstance(layer.input, list) else [layer.input])
            )
            if layer.weights and layer.name != "embeddings"  # its tables run over a block's ids
            else False
        )
        for variable in layer.weights:
            array = np.asarray(variable.numpy(), np.float64)
            out.append(
                (
                    layer.name,
                    variable.path.split("/")[-1],
                    array,
                    reads_features and array.ndim == 2,
                )
            )
    return out


def embed(keras, model, X: np.ndarray) -> np.ndarray:
    encoder = keras.Model(model.input, model.get_layer("embedding").output)
    return np.asarray(encoder(X.astype(np.float32), training=False), np.float64)
