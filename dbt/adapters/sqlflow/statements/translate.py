"""A parsed SQLFlow clause as the node it stands for: which of our materializations runs, with which
config, on which SELECT. `TO TRAIN` is ml_train, `TO PREDICT` ml_predict, `TO EXPLAIN` ml_explain,
`TO EVALUATE` a one-row table of metrics; no clause is an ordinary table."""

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional

from dbt.adapters.sqlflow.statements.parse import Clause, Name, StatementError

# SQLFlow's model classes (its premade TensorFlow estimators and the cluster design's model)
MODEL_CLASSES = {
    "dnnclassifier": "dnn_classifier",
    "dnnregressor": "dnn_regressor",
    "linearclassifier": "logistic_regression",
    "linearregressor": "linear_regression",
    "clustermodel": "dec",
    "deepembeddingclustermodel": "dec",
}
OWN_TYPES = (
    "kmeans",
    "em",
    "dec",
    "linear_regression",
    "logistic_regression",
    "factorization_machine",
    "dnn_regressor",
    "dnn_classifier",
    "autoencoder",
)

# WITH attribute -> our config key (SQLFlow's estimator arguments and the cluster design's names)
TRAIN_ATTRIBUTES = {
    "model.hidden_units": "hidden_units",
    "model.n_classes": "n_classes",
    "model.encode_units": "encode_units",
    "model.pretrain_dims": "encode_units",
    "model.n_clusters": "n_clusters",
    "model.run_pretrain": "run_pretrain",
    "model.pretrain_epochs": "pretrain_epochs",
    "model.pretrain_activation_func": "activation",
    "model.activation": "activation",
    "model.train_lr": "learning_rate",
    "model.learning_rate": "learning_rate",
    "optimizer.learning_rate": "learning_rate",
    "model.optimizer": "optimizer",
    "model.update_interval": "update_interval",
    "model.tol": "tol",
    "model.kmeans_init": "n_init",
    "model.dropout": "dropout",
    "model.train_batch_size": "batch_size",
    "train.batch_size": "batch_size",
    "train.epoch": "epochs",
    "train.epochs": "epochs",
    "train.max_steps": None,  # named in errors: a step budget we do not have
}
# SQLFlow's Keras metric names -> our metric keys
METRICS = {
    "accuracy": "accuracy",
    "auc": "roc_auc",
    "precision": "precision",
    "recall": "recall",
    "f1": "f1",
    "logloss": "log_loss",
    "log_loss": "log_loss",
    "binarycrossentropy": "log_loss",
    "categoricalcrossentropy": "log_loss",
    "meansquarederror": "mse",
    "mse": "mse",
    "meanabsoluteerror": "mae",
    "mae": "mae",
    "r2": "r2",
}
EXPLAINERS = {
    "permutationexplainer": "permutation",
    "permutation": "permutation",
    "kernelexplainer": "kernel",
    "kernel": "kernel",
    "exact": "exact",
    "exactexplainer": "exact",
}
OWN_KEYS = {  # our own config keys are accepted in WITH too, as they are in config()
    "train": None,  # any ml_train option: options.resolve judges it
    "predict": {"version", "pass_through", "output_probabilities", "in_database", "sample_size"},
    "evaluate": {"version", "metrics"},
    "explain": {"version", "key", "background", "explainer", "seed", "top_k"},
}


@dataclass
class Node:
    """What the statement must agree with: the dbt node's name, alias, config and refs."""

    name: str
    alias: str
    config: Mapping[str, Any]
    refs: Mapping[str, Mapping[str, str]]  # ref'd model name -> database, schema, identifier


@dataclass
class Plan:
    materialization: str  # table | ml_train | ml_predict | ml_evaluate | ml_explain
    sql: str
    settings: Dict[str, Any] = field(default_factory=dict)  # what the clause sets

    @property
    def side_suffixes(self) -> List[str]:
        return ["global"] if self.materialization == "ml_explain" else []


def plan(clause: Optional[Clause], sql: str, node: Node) -> Plan:
    if clause is None:
        return Plan("table", sql.strip().rstrip(";").rstrip())
    build = {"train": _train, "predict": _predict, "evaluate": _evaluate, "explain": _explain}
    return build[clause.verb](clause, node)


def merged_config(plan_: Plan, node: Node) -> Dict[str, Any]:
    """The node's config with the clause's settings; a key set both ways must agree."""
    config = dict(node.config)
    for key, value in plan_.settings.items():
        if key in config and config[key] is not None and _normal(config[key]) != _normal(value):
            raise StatementError(
                f"'{key}' is {config[key]!r} in config() but {value!r} in the SQLFlow statement; "
                f"they must agree: remove one of them."
            )
        config[key] = value
    return config


def _normal(value):
    return [_normal(v) for v in value] if isinstance(value, (list, tuple)) else value


# ---------------------------------------------------------------- the four clauses


def _train(clause: Clause, node: Node) -> Plan:
    model_type = _model_type(clause.subject)
    settings: Dict[str, Any] = {"model_type": model_type}
    sql = clause.select
    for key, value in clause.attributes.items():
        if key == "validation.select":
            settings["validation_select"] = _string(key, value)
        elif key == "validation.metrics":
            _metric_names(value)  # every metric is computed; the names must still be ours
        elif key in TRAIN_ATTRIBUTES and TRAIN_ATTRIBUTES[key] is not None:
            settings[TRAIN_ATTRIBUTES[key]] = _value(TRAIN_ATTRIBUTES[key], value)
        elif "." not in key:
            settings[key] = value
        else:
            raise StatementError(_unknown_attribute(key, "TO TRAIN"))
    if clause.columns:
        specs = [str(c) for c in clause.columns]
        if any(c.function is not None for c in clause.columns):
            settings["feature_columns"] = specs
        else:
            settings["features"] = specs
    if clause.label is not None:
        settings["label"] = clause.label
    if clause.using is not None:
        if model_type != "dec":
            raise StatementError(
                f"USING {clause.using} starts training from a pretrained model, which only "
                f"clusterModel (DEC, USING a pretrained autoencoder) does; remove USING."
            )
        settings["pretrained_model"] = _model_ref(clause.using, node, "USING")
    _check_into(clause, node)
    return Plan("ml_train", sql, settings)


def _predict(clause: Clause, node: Node) -> Plan:
    parts = clause.subject.parts
    if len(parts) < 2:
        raise StatementError(
            f"TO PREDICT {clause.subject} names the result as <table>.<column>: write "
            f"TO PREDICT {node.name}.{parts[0]} (the table is this model)."
        )
    if not _is_node(parts[-2], node):
        raise StatementError(
            f"TO PREDICT {clause.subject} writes table '{parts[-2]}', but in dbt the model file is "
            f"the table: write TO PREDICT {node.name}.{parts[-1]}."
        )
    if clause.using is None:
        raise StatementError(
            "TO PREDICT needs the model to apply: add USING {{ ref('<trained model>') }}."
        )
    _no(clause, "TO PREDICT", columns=True, label=True, into=True)
    settings = {
        "model": _model_ref(clause.using, node, "USING"),
        "prediction_column": parts[-1],
        **_own(clause, "predict"),
    }
    return Plan("ml_predict", clause.select, settings)


def _evaluate(clause: Clause, node: Node) -> Plan:
    _no(clause, "TO EVALUATE", columns=True, using=True)
    settings: Dict[str, Any] = {"model": _model_ref(clause.subject, node, "TO EVALUATE")}
    for key, value in clause.attributes.items():
        if key == "validation.metrics":
            settings["metrics"] = _metric_names(value)
        elif key in OWN_KEYS["evaluate"]:
            settings[key] = value
        else:
            raise StatementError(_unknown_attribute(key, "TO EVALUATE"))
    if clause.label is not None:
        settings["label"] = clause.label
    _check_into(clause, node)
    return Plan("ml_evaluate", clause.select, settings)


def _explain(clause: Clause, node: Node) -> Plan:
    _no(clause, "TO EXPLAIN", columns=True, label=True)
    settings: Dict[str, Any] = {"model": _model_ref(clause.subject, node, "TO EXPLAIN")}
    for key, value in clause.attributes.items():
        if key.split(".")[0] in ("summary", "shap_summary"):
            raise StatementError(
                f"WITH {key} sets SQLFlow's summary plot; dbt-sqlflow writes the attributions as "
                f"tables (this model and its __global table) instead: remove it."
            )
        if key not in OWN_KEYS["explain"]:
            raise StatementError(_unknown_attribute(key, "TO EXPLAIN"))
        settings[key] = value
    if clause.using is not None:
        name = str(clause.using).split(".")[-1].lower()
        if name not in EXPLAINERS:
            raise StatementError(
                f"USING {clause.using}: dbt-sqlflow explains with PermutationExplainer (the "
                f"default) or KernelExplainer (or Exact); TreeExplainer needs tree models, which "
                f"it does not train."
            )
        settings["explainer"] = EXPLAINERS[name]
    _check_into(clause, node)
    return Plan("ml_explain", clause.select, settings)


# ---------------------------------------------------------------- pieces


def _model_type(subject: Name) -> str:
    name = subject.parts[-1]
    if name.lower() in MODEL_CLASSES:
        return MODEL_CLASSES[name.lower()]
    if name in OWN_TYPES:
        return name
    raise StatementError(
        f"TO TRAIN {subject}: dbt-sqlflow trains DNNClassifier, DNNRegressor, LinearClassifier, "
        f"LinearRegressor and clusterModel (sqlflow_models.DeepEmbeddingClusterModel), and its own "
        f"model types {', '.join(OWN_TYPES)}; boosted trees and XGBoost models are not supported."
    )


def _value(key: str, value: Any) -> Any:
    if key in ("optimizer", "activation") and isinstance(value, str):
        return value.split(".")[-1].lower()  # optimizer.Adam, tf.nn.relu
    if key in ("hidden_units", "encode_units") and isinstance(value, (int, float)):
        return [value]
    return value


def _string(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise StatementError(f"{key} is a SELECT in quotes, got {value!r}.")
    return value


def _metric_names(value: Any) -> List[str]:
    names = value if isinstance(value, list) else str(value).split(",")
    out = []
    for name in names:
        key = str(name).strip().replace(" ", "").lower()
        if key not in METRICS:
            raise StatementError(
                f"validation.metrics: '{name}' is not a metric dbt-sqlflow computes; use "
                f"Accuracy, AUC, Precision, Recall, F1, LogLoss (classifiers) or MeanSquaredError, "
                f"MeanAbsoluteError, R2 (regressors)."
            )
        out.append(METRICS[key])
    return out


def _own(clause: Clause, verb: str) -> Dict[str, Any]:
    allowed = OWN_KEYS[verb]
    for key in clause.attributes:
        if key not in allowed:
            raise StatementError(_unknown_attribute(key, f"TO {verb.upper()}"))
    return dict(clause.attributes)


def _unknown_attribute(key: str, where: str) -> str:
    return (
        f"WITH {key} is not an attribute dbt-sqlflow can honour in {where}; remove it (see the "
        f"README's SQLFlow table for the attributes it maps)."
    )


def _no(clause: Clause, where: str, **parts: bool) -> None:
    for part in parts:
        if getattr(clause, part):
            raise StatementError(f"{where} takes no {part.upper()}; remove it.")


def _is_node(name: str, node: Node) -> bool:
    return name.lower() in (node.name.lower(), (node.alias or node.name).lower())


def _check_into(clause: Clause, node: Node) -> None:
    if clause.into is not None and not _is_node(clause.into.parts[-1], node):
        raise StatementError(
            f"INTO {clause.into}: in dbt the model file is the table, so INTO must name this model "
            f"('{node.name}'); rename the file to {clause.into.parts[-1]}.sql, or write INTO {node.name}."
        )


def _model_ref(name: Name, node: Node, where: str) -> str:
    """The ref'd model a rendered `{{ ref('m') }}` stands for; a bare name fails with the ref to write."""
    parts = [p.lower() for p in name.parts]
    if len(parts) >= 2:
        for ref_name, r in node.refs.items():
            wanted = [r.get("database"), r.get("schema"), r.get("identifier")][-len(parts) :]
            if [str(w).lower() for w in wanted] == parts:
                return ref_name
    bare = name.parts[-1]
    raise StatementError(
        f"{where} {name}: the model must be a ref() so that dbt builds it first and draws the "
        f"lineage edge; write {{{{ ref('{bare}') }}}}."
    )
