"""The ML config keys: which apply to which materialization and model type, their defaults, and the
checks that turn a mistyped or misplaced key into a message naming the key and the fix."""

import difflib
import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence

from dbt.adapters.sqlflow.errors import OptionError

# dbt's own node config keys (NodeConfig and friends): never ours to judge.
DBT_KEYS = {
    "alias",
    "batch_size",
    "begin",
    "column_types",
    "concurrent_batches",
    "contract",
    "database",
    "docs",
    "enabled",
    "event_time",
    "full_refresh",
    "grants",
    "group",
    "incremental_strategy",
    "lookback",
    "materialized",
    "meta",
    "on_configuration_change",
    "on_schema_change",
    "packages",
    "persist_docs",
    "post_hook",
    "pre_hook",
    "post-hook",
    "pre-hook",
    "quoting",
    "schema",
    "static_analysis",
    "tags",
    "unique_key",
    "access",
    "docs",
    "description",
    "sql_header",
    "unlogged",
    "indexes",
    "fail_calc",
    "warn_if",
    "error_if",
    "severity",
    "store_failures",
    "store_failures_as",
    "limit",
    "where",
}


@dataclass(frozen=True)
class Option:
    name: str
    default: Any
    check: Callable[[Any], bool]
    expected: str  # what a valid value looks like, for the message
    applies: Optional[Sequence[str]] = None  # model types it applies to; None = all


def _is_int(v, low=None):
    return isinstance(v, int) and not isinstance(v, bool) and (low is None or v >= low)


def _is_number(v, low=None, strict=False):
    ok = isinstance(v, (int, float)) and not isinstance(v, bool)
    return ok and (low is None or (v > low if strict else v >= low))


def _is_name_list(v):
    return isinstance(v, str) or (
        isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v)
    )


def _one_of(*values):
    return lambda v: v in values


_AGE = re.compile(
    r"^\s*\d+(\.\d+)?\s*(second|minute|hour|day|week|month|year)s?\s*$", re.IGNORECASE
)
# promote_if conditions: groups 1 and 2 are the operator and the bound (a number or live)
GATE = re.compile(r"^\s*(>=|<=|>|<|=|==)\s*(live|[-+]?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?)\s*$")


def _is_gate_map(v) -> bool:
    return (
        isinstance(v, dict)
        and len(v) > 0
        and all(isinstance(k, str) and isinstance(c, str) and GATE.match(c) for k, c in v.items())
    )


# How a trained model is kept in service (design section 10): none of these changes what is learned,
# so retrain='on_change' ignores them when it compares a version's options.
OPERATION = [
    Option(
        "max_age",
        None,
        lambda v: v is None or (isinstance(v, str) and bool(_AGE.match(v))),
        "an age such as '7 days', '12 hours' or '1 month'",
    ),
    Option(
        "promote_if",
        None,
        lambda v: v is None or _is_gate_map(v),
        "a map of metric to condition, e.g. {'eval_roc_auc': '>= 0.70', 'eval_log_loss': '<= live'}",
    ),
    Option("on_gate_fail", "error", _one_of("error", "warn"), "'error' or 'warn'"),
    Option(
        "keep_versions",
        0,
        lambda v: _is_int(v, 0),
        "a number of versions whose artifacts are kept (0 = all)",
    ),
]
OPERATIONAL_KEYS = ("retrain", "max_age", "promote_if", "on_gate_fail", "keep_versions")

# Where the work runs (engines/): a node's own keys, else the profile's for the target.
ENGINE = [
    Option(
        "engine",
        None,
        lambda v: v is None or v in ("local", "dask", "tf_multiworker"),
        "'local', 'dask' (kmeans, em) or 'tf_multiworker' (TensorFlow models)",
    ),
    Option(
        "dask_scheduler",
        None,
        lambda v: v is None or isinstance(v, str),
        "'tcp://host:8786' or 'local[N]'",
    ),
    Option(
        "tf_cluster",
        None,
        lambda v: v is None or isinstance(v, (str, dict)),
        "{'worker': ['host:port', ...]}, its JSON, or 'local[N]'",
    ),
    Option(
        "tf_launcher",
        None,
        lambda v: v is None or (isinstance(v, str) and "{host}" in v),
        "a command that runs the worker on {host}, e.g. 'ssh {host}'",
    ),
]

COMMON = (
    [
        Option("model_type", None, lambda v: isinstance(v, str), "a model type name"),
        Option(
            "features", None, lambda v: v is None or _is_name_list(v), "a list of column names"
        ),
        Option(
            "key", None, lambda v: v is None or _is_name_list(v), "a column name or a list of them"
        ),
        Option("label", None, lambda v: v is None or isinstance(v, str), "a column name"),
        Option("exclude", [], _is_name_list, "a list of column names"),
        Option(
            "feature_columns",
            None,
            lambda v: (
                v is None or (isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v))
            ),
            "SQLFlow feature columns, e.g. ['x1', 'NUMERIC(v, 4)', 'CATEGORY_ID(c, 10)']",
        ),
        Option("predict_only", [], _is_name_list, "a list of column names"),
        Option(
            "normalize",
            "zscore",
            _one_of("zscore", "minmax", "none"),
            "'zscore', 'minmax' or 'none'",
        ),
        Option("max_states", 100, lambda v: _is_int(v, 1), "a whole number >= 1"),
        Option("max_input_attributes", 255, lambda v: _is_int(v, 1), "a whole number >= 1"),
        Option(
            "null_handling",
            "impute",
            _one_of("error", "impute", "indicator"),
            "'error', 'impute' or 'indicator'",
        ),
        Option("seed", 0, lambda v: _is_int(v, 0), "a whole number >= 0"),
        Option(
            "sample_size",
            50_000,
            lambda v: _is_int(v, 0),
            "a whole number of rows per batch >= 0 (0 = the default, 50,000)",
        ),
        Option(
            "retrain",
            "always",
            _one_of("always", "on_change", "never", "max_age"),
            "'always', 'on_change', 'never' or 'max_age' (with max_age='7 days')",
        ),
    ]
    + OPERATION
    + ENGINE
)

CLUSTER_TYPES = ("kmeans", "em")
DEC = ("dec",)
CLUSTER = [
    Option("n_clusters", 10, lambda v: _is_int(v, 0), "a whole number >= 0 (0 = choose k)"),
    Option(
        "k_range",
        [2, 10],
        lambda v: (
            isinstance(v, (list, tuple))
            and len(v) == 2
            and all(_is_int(x, 2) for x in v)
            and v[0] <= v[1]
        ),
        "[min, max] with 2 <= min <= max",
    ),
    Option("scalable", False, lambda v: isinstance(v, bool), "true or false", CLUSTER_TYPES),
    Option("max_iter", None, lambda v: v is None or _is_int(v, 1), "a whole number >= 1"),
    Option("tol", None, lambda v: v is None or _is_number(v, 0), "a number >= 0"),
    Option("n_init", 1, lambda v: _is_int(v, 1), "a whole number >= 1", ("kmeans", "dec")),
    Option(
        "covariance_type",
        "diag",
        _one_of("diag", "full", "spherical", "tied"),
        "'diag', 'full', 'spherical' or 'tied'",
        ("em",),
    ),
    Option("minimum_support", 1, lambda v: _is_int(v, 1), "a whole number >= 1", CLUSTER_TYPES),
    Option("output_probabilities", False, lambda v: isinstance(v, bool), "true or false"),
    Option("pass_through", True, lambda v: isinstance(v, bool), "true or false"),
    Option(
        "label_column", "cluster_id", lambda v: isinstance(v, str) and v != "", "a column name"
    ),
    Option(
        "stable_ids",
        True,
        lambda v: isinstance(v, bool),
        "true or false (match a retrained model's clusters to the live version's ids)",
    ),
]
LINEAR_TYPES = ("linear_regression", "logistic_regression")
NETWORK_TYPES = ("factorization_machine", "dnn_regressor", "dnn_classifier", "autoencoder")
CLASSIFIERS = ("logistic_regression", "dnn_classifier", "factorization_machine")
KERAS_TYPES = LINEAR_TYPES + NETWORK_TYPES
SUPERVISED = tuple(t for t in KERAS_TYPES if t != "autoencoder")
SQL = ("sql",)  # sql4ml: prediction and objective written in SQL (design section 8)


def _units(v):
    return isinstance(v, (list, tuple)) and len(v) > 0 and all(_is_int(x, 1) for x in v)


TRAIN = [
    Option(
        "learning_rate",
        0.05,
        lambda v: _is_number(v, 0, strict=True),
        "a number > 0",
        KERAS_TYPES + DEC + SQL,
    ),
    Option("epochs", 50, lambda v: _is_int(v, 1), "a whole number >= 1", KERAS_TYPES + DEC + SQL),
    Option("batch_size", 256, lambda v: _is_int(v, 1), "a whole number >= 1", KERAS_TYPES + DEC),
    Option(
        "optimizer",
        "adam",
        _one_of("sgd", "adam", "adagrad", "rmsprop", "ftrl"),
        "'sgd', 'adam', 'adagrad', 'rmsprop' or 'ftrl'",
        KERAS_TYPES + SQL,
    ),
    Option("l1", 0.0, lambda v: _is_number(v, 0), "a number >= 0", KERAS_TYPES),
    Option("l2", 0.0, lambda v: _is_number(v, 0), "a number >= 0", KERAS_TYPES),
    Option(
        "early_stopping",
        0,
        lambda v: _is_int(v, 0),
        "a patience in epochs (0 = off)",
        KERAS_TYPES + SQL,
    ),
    Option(
        "validation_split",
        0.0,
        lambda v: _is_number(v, 0) and v < 1,
        "a fraction in [0, 1)",
        KERAS_TYPES,
    ),
    Option(
        "data_split",
        "random",
        lambda v: isinstance(v, str) and v != "",
        "'random', 'seq' or the name of a boolean column (true = held out)",
        KERAS_TYPES,
    ),
    Option(
        "class_weight",
        None,
        lambda v: v is None or v == "balanced" or isinstance(v, dict),
        "'balanced' or a map of class to weight",
        CLASSIFIERS,
    ),
    Option(
        "label",
        None,
        lambda v: isinstance(v, str) and v != "",
        "the name of the target column",
        SUPERVISED,
    ),
    Option(
        "memory_budget_mb",
        1024,
        lambda v: _is_number(v, 0),
        "megabytes >= 0 (0 = always stream)",
        KERAS_TYPES + DEC + SQL,
    ),
    Option(
        "validation_select",
        None,
        lambda v: v is None or (isinstance(v, str) and v.strip() != ""),
        "a SELECT of the held-out rows, with the training SELECT's columns",
        KERAS_TYPES,
    ),
    Option(
        "n_classes",
        None,
        lambda v: v is None or _is_int(v, 2),
        "the number of classes the label must have (>= 2)",
        CLASSIFIERS,
    ),
    Option(
        "n_factors", 8, lambda v: _is_int(v, 1), "a whole number >= 1", ("factorization_machine",)
    ),
    Option(
        "hidden_units",
        [64, 32],
        _units,
        "a list of layer sizes, e.g. [64, 32]",
        ("dnn_regressor", "dnn_classifier"),
    ),
    Option(
        "dropout",
        0.0,
        lambda v: _is_number(v, 0) and v < 1,
        "a fraction in [0, 1)",
        ("dnn_regressor", "dnn_classifier"),
    ),
    Option(
        "activation",
        "relu",
        _one_of("relu", "tanh", "sigmoid", "elu", "selu", "gelu", "swish"),
        "'relu', 'tanh', 'sigmoid', 'elu', 'selu', 'gelu' or 'swish'",
        ("dnn_regressor", "dnn_classifier", "autoencoder", "dec"),
    ),
    Option(
        "encode_units",
        [100, 10],
        _units,
        "a list of encoder layer sizes, e.g. [100, 7]",
        ("autoencoder", "dec"),
    ),
]
DEC_OPTIONS = [
    Option("run_pretrain", True, lambda v: isinstance(v, bool), "true or false", DEC),
    Option(
        "pretrained_model",
        None,
        lambda v: v is None or (isinstance(v, str) and v != ""),
        "the name of an ml_train model of type autoencoder or dec",
        DEC,
    ),
    Option("pretrain_epochs", 50, lambda v: _is_int(v, 1), "a whole number >= 1", DEC),
    Option("restarts", 1, lambda v: _is_int(v, 1), "a whole number >= 1", DEC),
    Option("update_interval", 140, lambda v: _is_int(v, 1), "a whole number of batches >= 1", DEC),
    Option("output_embedding", False, lambda v: isinstance(v, bool), "true or false", DEC),
]
SQL_OPTIONS = [
    Option(
        "weights",
        None,
        lambda v: isinstance(v, dict) and len(v) > 0,
        "a map of weight name to its index columns, e.g. {'w': ['feature'], 'b': []}",
        SQL,
    ),
    Option(
        "prediction",
        "predictions",
        lambda v: isinstance(v, str) and v != "",
        "the name of the program's prediction CTE",
        SQL,
    ),
    Option(
        "batch_size",
        0,
        lambda v: _is_int(v, 0),
        "a whole number >= 0 (0 = full-batch gradient descent)",
        SQL,
    ),
    Option(
        "sparse",
        "auto",
        lambda v: v in ("auto", True, False, "true", "false"),
        "'auto', true or false (keep long-format data relations sparse on a full batch)",
        SQL,
    ),
]

# Xie et al.'s settings where ours for other model types differ
TYPE_DEFAULTS = {"dec": {"learning_rate": 0.001, "epochs": 20, "n_init": 20, "tol": 0.001}}

PREDICT = [
    Option("model", None, lambda v: isinstance(v, str) and v != "", "the name of a trained model"),
    Option(
        "version", None, lambda v: v is None or _is_int(v, 1) or v == "latest", "a version number"
    ),
    Option("pass_through", True, lambda v: isinstance(v, bool), "true or false"),
    Option("output_probabilities", False, lambda v: isinstance(v, bool), "true or false"),
    Option(
        "in_database",
        "auto",
        lambda v: v in ("auto", False, True, "false", "true"),
        "'auto' or false",
    ),
    Option(
        "memory_budget_mb",
        1024,
        lambda v: _is_number(v, 0),
        "megabytes >= 0 (0 = always read in batches)",
    ),
    Option(
        "sample_size", 50_000, lambda v: _is_int(v, 1), "a whole number of rows per batch >= 1"
    ),
    Option(
        "incremental",
        False,
        lambda v: isinstance(v, bool),
        "true or false (score only new rows and rows of a version no longer live; needs unique_key)",
    ),
    Option(
        "prediction_column",
        None,
        lambda v: v is None or (isinstance(v, str) and v != ""),
        "the name of the prediction column (SQLFlow's TO PREDICT <table>.<column>)",
    ),
    Option(
        "replaces",
        None,
        lambda v: v is None or (isinstance(v, str) and v != ""),
        "the name of the sql model's data CTE that this node's SELECT replaces",
    ),
] + [o for o in ENGINE if o.name in ("engine", "dask_scheduler")]

_MODEL = PREDICT[:2]  # model, version
EXPLAIN = _MODEL + [
    Option(
        "key", None, lambda v: v is None or _is_name_list(v), "a column name or a list of them"
    ),
    Option(
        "background",
        100,
        lambda v: _is_int(v, 1),
        "a number of rows >= 1 (the SHAP background sample)",
    ),
    Option(
        "explainer",
        "auto",
        _one_of("auto", "permutation", "kernel", "exact"),
        "'auto', 'permutation', 'kernel' or 'exact'",
    ),
    Option("seed", 0, lambda v: _is_int(v, 0), "a whole number >= 0"),
    Option(
        "max_evals", 0, lambda v: _is_int(v, 0), "model calls per row >= 0 (0 = shap's default)"
    ),
]
EVALUATE = _MODEL + [
    Option("label", None, lambda v: v is None or isinstance(v, str), "a column name"),
    Option("metrics", None, lambda v: v is None or _is_name_list(v), "a list of metric names"),
]
SCORING = ("ml_predict", "ml_explain", "ml_evaluate")  # nodes that apply a trained model

MODEL_TYPES = {
    "cluster": CLUSTER_TYPES + DEC,
    "ml_train": CLUSTER_TYPES + DEC + KERAS_TYPES + SQL,
    "ml_predict": (),
    "ml_explain": (),
    "ml_evaluate": (),
}


def catalog(materialization: str, model_type: Optional[str] = None) -> List[Option]:
    if materialization in SCORING:
        return {"ml_predict": PREDICT, "ml_explain": EXPLAIN, "ml_evaluate": EVALUATE}[
            materialization
        ]
    if model_type in KERAS_TYPES:
        return [o for o in COMMON if o.name != "label"] + TRAIN
    if model_type == "sql":  # the program says what it reads: no feature or encoding keys
        trained = ("learning_rate", "epochs", "optimizer", "early_stopping", "memory_budget_mb")
        kept = ("model_type", "key", "seed") + OPERATIONAL_KEYS
        common = [o for o in COMMON if o.name in kept]
        return common + [o for o in TRAIN if o.name in trained] + SQL_OPTIONS
    if model_type == "dec":
        shared = [
            o
            for o in TRAIN
            if o.name
            in (
                "learning_rate",
                "epochs",
                "batch_size",
                "activation",
                "encode_units",
                "memory_budget_mb",
            )
        ]
        return COMMON + CLUSTER + shared + DEC_OPTIONS
    return COMMON + CLUSTER


def _all_known_names() -> set:
    return {
        o.name
        for o in COMMON
        + CLUSTER
        + PREDICT
        + TRAIN
        + DEC_OPTIONS
        + SQL_OPTIONS
        + EXPLAIN
        + EVALUATE
    }


def _closest(key: str, names: Iterable[str]) -> Optional[str]:
    matches = difflib.get_close_matches(key, sorted(names), n=1, cutoff=0.75)
    return matches[0] if matches else None


def resolve(materialization: str, config: Dict[str, Any], model_name: str) -> Dict[str, Any]:
    """The node's ML options with defaults filled in; OptionError for any key or value that is wrong."""
    where = f"model '{model_name}' (materialized='{materialization}')"
    model_type = config.get("model_type") or ("kmeans" if materialization == "cluster" else None)
    options = catalog(materialization, model_type)
    by_name = {o.name: o for o in options}
    allowed_types = MODEL_TYPES[materialization]
    if materialization not in SCORING:
        if model_type is None:
            raise OptionError(f"{where} needs model_type; one of {', '.join(allowed_types)}.")
        if model_type not in allowed_types:
            raise OptionError(
                f"{where}: model_type '{model_type}' is not available here; "
                f"use one of {', '.join(allowed_types)}."
            )

    resolved = {}
    for key, value in config.items():
        option = by_name.get(key)
        if option is None and (key in DBT_KEYS or key.startswith("_")):
            continue
        if option is None:
            if key in _all_known_names():
                raise OptionError(
                    f"{where}: '{key}' does not apply to model_type '{model_type}'; "
                    f"remove it (valid keys: {', '.join(sorted(by_name))})."
                )
            guess = _closest(key, _all_known_names())
            if guess:
                raise OptionError(f"{where}: unknown config key '{key}'; did you mean '{guess}'?")
            continue  # a key of the project's own (for its macros): not ours to judge
        if option.applies is not None and model_type not in option.applies:
            raise OptionError(
                f"{where}: '{key}' applies to model_type {', '.join(option.applies)} only, "
                f"not '{model_type}'; remove it."
            )
        if not option.check(value):
            raise OptionError(
                f"{where}: {key}={value!r} is not valid; expected {option.expected}."
            )
        resolved[key] = value
    for option in options:
        if option.name not in resolved and (
            option.applies is None or model_type in option.applies
        ):
            default = TYPE_DEFAULTS.get(model_type, {}).get(option.name, option.default)
            resolved[option.name] = list(default) if isinstance(default, list) else default
    resolved["model_type"] = model_type
    for key in ("features", "key", "exclude", "predict_only"):
        if isinstance(resolved.get(key), str):
            resolved[key] = [resolved[key]]
    if model_type in SUPERVISED and not resolved.get("label"):
        raise OptionError(
            f"{where}: model_type '{model_type}' learns a target: name its column with "
            f"config(label='...')."
        )
    if model_type == "sql" and not resolved.get("weights"):
        raise OptionError(
            f"{where}: a sql model learns the weights its SQL reads: declare them with "
            f"config(weights={{'w': ['feature'], 'b': []}}) (name: index columns)."
        )
    if model_type == "sql" and resolved.get("sparse") in (True, "true") and resolved["batch_size"]:
        raise OptionError(
            f"{where}: sparse=true keeps the data sparse for full-batch descent, and "
            f"batch_size={resolved['batch_size']} cuts mini-batches; set batch_size=0 or "
            f"sparse='auto'."
        )
    _check_feature_columns(where, resolved, config)
    _check_operation(where, materialization, resolved, config)
    if materialization in SCORING and not resolved.get("model"):
        raise OptionError(f"{where} needs config(model='<name of an ml_train or cluster model>').")
    return resolved


def _check_feature_columns(where: str, resolved: Dict, config: Dict) -> None:
    """feature_columns (SQLFlow's COLUMN clause) decide the features; validation_select, the split."""
    if resolved.get("validation_select") and config.get("data_split") not in (None, "random"):
        raise OptionError(
            f"{where}: validation_select gives the held-out rows, and data_split="
            f"{config['data_split']!r} would choose others; remove one of them."
        )
    if not resolved.get("feature_columns"):
        return
    from dbt.adapters.sqlflow.statements.columns import feature_names

    try:
        names = feature_names(resolved["feature_columns"])
    except OptionError as exc:
        raise OptionError(f"{where}: {exc}") from None
    if config.get("features") is not None and list(resolved["features"]) != names:
        raise OptionError(
            f"{where}: features={resolved['features']!r} and feature_columns (which give "
            f"{names!r}) disagree; keep feature_columns only."
        )
    resolved["features"] = names


def _check_operation(where: str, materialization: str, resolved: Dict, config: Dict) -> None:
    """Keys that only make sense together."""
    if materialization == "ml_predict":
        unique_key = config.get("unique_key")
        if unique_key is not None and not (
            isinstance(unique_key, str) or _is_name_list(unique_key)
        ):
            raise OptionError(
                f"{where}: unique_key is a column name or a list of them, got {unique_key!r}."
            )
        resolved["unique_key"] = [unique_key] if isinstance(unique_key, str) else unique_key
        resolved["on_schema_change"] = config.get("on_schema_change") or "ignore"
        if resolved.get("incremental") and not unique_key:
            raise OptionError(
                f"{where}: incremental=true scores only rows it has not scored yet, which it finds "
                f"by key: add config(unique_key='<column>') (or a list of columns)."
            )
        return
    if resolved.get("retrain") == "max_age" and not resolved.get("max_age"):
        raise OptionError(
            f"{where}: retrain='max_age' retrains when the live version is older than max_age: "
            f"add config(max_age='7 days')."
        )
    if resolved.get("max_age") and resolved.get("retrain") != "max_age":
        raise OptionError(
            f"{where}: max_age={resolved['max_age']!r} is read with retrain='max_age' only; "
            f"add config(retrain='max_age') or remove max_age."
        )
