"""The long weights tables of `ml_train` nodes: one row per number (model_version, tensor, i, j,
feature, class, value), in original units where the model is linear, so the user's SQL can join it."""

from typing import List

import numpy as np

from dbt.adapters.sqlflow.data import Column, Frame
from dbt.adapters.sqlflow.data.pgtypes import WIRE_TYPES
from dbt.adapters.sqlflow.ml import supervised
from dbt.adapters.sqlflow.ml.preprocess import FeatureEncoder


def _integers(name: str, values: List) -> Column:
    nulls = np.array([v is None for v in values], bool)
    data = np.array([0 if v is None else v for v in values], np.int32)
    return Column.of(name, data, nulls=nulls, type=WIRE_TYPES["integer"])


def _texts(name: str, values: List) -> Column:
    nulls = np.array([v is None for v in values], bool)
    return Column.of(
        name,
        np.array(["" if v is None else v for v in values], object),
        nulls=nulls,
        type=WIRE_TYPES["text"],
    )


def long_frame(version: int, rows: List[tuple]) -> Frame:
    """The weights table from (tensor, i, j, feature, class, value) rows; None is NULL."""
    tensor, i, j, feature, klass, value = (list(x) for x in zip(*rows)) if rows else ([],) * 6
    return Frame(
        [
            Column.of(
                "model_version", np.full(len(rows), version, np.int32), type=WIRE_TYPES["integer"]
            ),
            _texts("tensor", tensor),
            _integers("i", i),
            _integers("j", j),
            _texts("feature", feature),
            _texts("class", klass),
            Column.of("value", np.array(value, np.float64)),
        ]
    )


def original_units(model: supervised.LinearModel, encoder: FeatureEncoder):
    """The kernel and bias for raw column values: z = b + sum(w * (x - c) / s) = b' + sum(w' * x)."""
    center, scale = encoder.affine()
    kernel = model.kernel / scale[:, None]
    bias = model.bias - (center / scale) @ model.kernel
    return kernel, bias


def output_classes(model: supervised.LinearModel) -> List:
    """The class each output column's logit belongs to (binary: the second class), or [None]."""
    if model.task == "regression":
        return [None]
    return [model.classes[1]] if model.task == "binary" else list(model.classes)


def feature_weights(model: supervised.LinearModel, encoder: FeatureEncoder) -> List[tuple]:
    """(j, k, feature, class, weight in original units) per feature and output column."""
    kernel, _ = original_units(model, encoder)
    names, classes = encoder.feature_names, output_classes(model)
    return [
        (j, k, names[j], classes[k], float(kernel[j, k]))
        for k in range(kernel.shape[1])
        for j in range(kernel.shape[0])
    ]


def linear_weights_frame(
    model: supervised.LinearModel, encoder: FeatureEncoder, version: int
) -> Frame:
    _, bias = original_units(model, encoder)
    classes = output_classes(model)
    rows = [("weights", j, k, f, c, w) for j, k, f, c, w in feature_weights(model, encoder)]
    rows += [
        ("intercept", None, k, "__intercept__", classes[k], bias[k]) for k in range(len(bias))
    ]
    return long_frame(
        version,
        [
            (t, i, j, f, None if c is None else supervised.class_name(c), v)
            for t, i, j, f, c, v in rows
        ],
    )


def network_weights_frame(
    model: supervised.KerasModel, encoder: FeatureEncoder, version: int
) -> Frame:
    """Every layer's arrays, one row per number: `tensor` is layer/weight (e.g. hidden_0/kernel), `i`
    and `j` index it, `feature` names the input feature where the first axis runs over features."""
    names = encoder.feature_names
    rows = []
    for layer, name, array, per_feature in model.weights:
        matrix = array.reshape(len(array), -1) if array.ndim else array.reshape(1, 1)
        for i in range(matrix.shape[0]):
            for j in range(matrix.shape[1]):
                rows.append(
                    (
                        f"{layer}/{name}",
                        i,
                        j if array.ndim == 2 else None,
                        names[i] if per_feature else None,
                        float(matrix[i, j]),
                    )
                )
    return long_frame(version, [(t, i, j, f, None, v) for t, i, j, f, v in rows])


def cluster_weights_frame(model, encoder: FeatureEncoder, version: int) -> Frame:
    """Long weights: centres (and for EM variances and mixture weights), one row per number."""
    names = encoder.feature_names
    rows = []  # (tensor, i, j, feature, value)
    for i, center in enumerate(model.centers):
        rows += [("centers", i, j, names[j], v) for j, v in enumerate(center)]
    if model.model_type == "em":
        rows += [("mixture_weights", i, None, None, w) for i, w in enumerate(model.weights)]
        cov = np.asarray(model.covariances)
        if model.covariance_type == "diag":
            rows += [
                ("variances", i, j, names[j], v)
                for i, r in enumerate(cov)
                for j, v in enumerate(r)
            ]
        elif model.covariance_type == "spherical":
            rows += [("variances", i, None, None, v) for i, v in enumerate(cov)]
        elif model.covariance_type == "tied":
            rows += [
                ("covariance", a, b, names[a], cov[a, b])
                for a in range(len(cov))
                for b in range(len(cov))
            ]
        else:
            rows += [
                ("covariances", i, a * len(names) + b, names[a], c[a, b])
                for i, c in enumerate(cov)
                for a in range(len(c))
                for b in range(len(c))
            ]
    return long_frame(version, [(t, i, j, f, None, float(v)) for t, i, j, f, v in rows])


def empty_weights_frame() -> Frame:
    """The weights table's columns with no rows (`dbt run --empty`)."""
    return long_frame(0, [])
