{#-
  Relations usable in a FROM clause, named after BigQuery ML's functions:
    select * from {{ ml_centroids(ref('customer_segments')) }}
  The registry lives in the profile's registry_schema (default: the target schema). The registry
  views carry their own alias (PostgreSQL before 16 requires one): the macro's name, or alias='x'.
-#}

{% macro sqlflow_registry_relation() -%}
  {{ adapter.quote(target.database) }}.{{ adapter.quote(adapter.sqlflow_registry_schema()) }}.{{ adapter.quote('sqlflow_models') }}
{%- endmacro %}

{% macro _sqlflow_side(relation, suffix) -%}
  {{ relation.incorporate(path={'identifier': adapter.sqlflow_side_identifier(relation.identifier, suffix)}) }}
{%- endmacro %}

{#- A SQL string literal: quotes doubled, so no relation name can end the literal. -#}
{% macro _sqlflow_literal(value) -%}
  '{{ (value | string).replace("'", "''") }}'
{%- endmacro %}

{#- The registry rows of one model: keyed by its relation (database, schema, identifier), so an alias
    is followed and models of the same name in two schemas or targets never mix. -#}
{% macro _sqlflow_rows_of(relation) -%}
  relation_database = {{ _sqlflow_literal(relation.database or target.database) }}
  and relation_schema = {{ _sqlflow_literal(relation.schema) }}
  and relation_identifier = {{ _sqlflow_literal(relation.identifier) }}
{%- endmacro %}

{#- The version in use: the live one (promote_if and sqlflow_promote decide which). -#}
{% macro _sqlflow_latest(relation) -%}
  (select * from {{ sqlflow_registry_relation() }}
   where {{ _sqlflow_rows_of(relation) }} and status = 'live')
{%- endmacro %}

{% macro ml_centroids(relation) -%}
  {{ _sqlflow_side(relation, 'centroids') }}
{%- endmacro %}

{% macro ml_profile(relation) -%}
  {{ _sqlflow_side(relation, 'profile') }}
{%- endmacro %}

{#- an ml_explain node's features ranked by mean absolute attribution (BigQuery's ML.GLOBAL_EXPLAIN) -#}
{% macro ml_global_explain(relation) -%}
  {{ _sqlflow_side(relation, 'global') }}
{%- endmacro %}

{% macro ml_weights(relation) -%}
  {{ relation }}
{%- endmacro %}

{% macro ml_versions(relation, alias='ml_versions') -%}
  (select model_name, version, status, model_type, materialization, row_count, metrics, options, trained_at,
          invocation_id, input_fingerprint, unique_id, artifact is not null as has_artifact, artifact_sha256,
          events
   from {{ sqlflow_registry_relation() }}
   where {{ _sqlflow_rows_of(relation) }}) as {{ adapter.quote(alias) }}
{%- endmacro %}

{% macro ml_evaluate(relation, alias='ml_evaluate') -%}
  (select latest.model_name, latest.version, m.key as metric,
          case when jsonb_typeof(m.value) = 'number' then (m.value #>> '{}')::float8 end as value
   from {{ _sqlflow_latest(relation) }} as latest, jsonb_each(latest.metrics) as m) as {{ adapter.quote(alias) }}
{%- endmacro %}

{#- One row per epoch or iteration, as BigQuery ML's ML.TRAINING_INFO: phase ('train'; DEC's 'pretrain'
    and 'cluster', a row per target update; clustering's 'fit'), iteration, loss, eval_loss (held-out
    rows), learning_rate, duration_ms, label_change (DEC) and centre_shift (streamed k-means). -#}
{% macro ml_training_info(relation, alias='ml_training_info') -%}
  (select latest.model_name, latest.version, h.phase, h.iteration, h.loss, h.eval_loss, h.learning_rate,
          h.duration_ms, h.label_change, h.centre_shift
   from {{ _sqlflow_latest(relation) }} as latest,
        jsonb_to_recordset(coalesce(latest.training_info -> 'history', '[]'::jsonb))
        as h(phase text, iteration int, loss float8, eval_loss float8, learning_rate float8,
             duration_ms float8, label_change float8, centre_shift float8)) as {{ adapter.quote(alias) }}
{%- endmacro %}

{#- n_clusters=0: one row per k tried, with its metrics and whether it was chosen. -#}
{% macro ml_k_sweep(relation, alias='ml_k_sweep') -%}
  (select latest.model_name, latest.version, s.k, s.inertia, s.silhouette, s.davies_bouldin,
          s.calinski_harabasz, s.bic, s.aic, s.chosen, s.seconds * 1000 as duration_ms
   from {{ _sqlflow_latest(relation) }} as latest,
        jsonb_to_recordset(coalesce(latest.training_info -> 'k_sweep', '[]'::jsonb))
        as s(k int, inertia float8, silhouette float8, davies_bouldin float8, calinski_harabasz float8,
             bic float8, aic float8, chosen boolean, seconds float8)) as {{ adapter.quote(alias) }}
{%- endmacro %}

{% macro ml_feature_info(relation, alias='ml_feature_info') -%}
  (select latest.model_name, latest.version, f.ordinality::int as position, f.value ->> 'name' as column_name,
          f.value ->> 'kind' as kind, (f.value ->> 'center')::float8 as center, (f.value ->> 'scale')::float8 as scale,
          f.value ->> 'impute' as impute_value, f.value -> 'states' as states,
          (f.value ->> 'other')::boolean as has_other, (f.value ->> 'indicator')::boolean as has_missing_indicator
   from {{ _sqlflow_latest(relation) }} as latest,
        jsonb_array_elements(latest.features -> 'features') with ordinality as f(value, ordinality)) as {{ adapter.quote(alias) }}
{%- endmacro %}


{#- dbt run-operation sqlflow_promote --args '{model: churn_model, version: 3}'
    Makes a registered version live (a rollback, or a rejected candidate after review); the registry
    records who and which invocation in the events of both versions. -#}
{% macro sqlflow_promote(model, version) %}
  {%- set relation = _sqlflow_model_relation(model) -%}
  {%- set message = adapter.sqlflow_promote(relation, model, version, invocation_id) -%}
  {{ log(message, info=true) }}
{% endmacro %}

{#- dbt run-operation sqlflow_export --args '{model: churn_model, version: 3, format: onnx, path: churn.onnx}'
    Writes a version (default: the live one) as ONNX, or with format: sql and input: <relation> as a
    view definition that scores the relation inside PostgreSQL. -#}
{% macro sqlflow_export(model, version=none, format='onnx', path=none, input=none) %}
  {%- set relation = _sqlflow_model_relation(model) -%}
  {{ log(adapter.sqlflow_export(relation, model, version, format, path, input), info=true) }}
{% endmacro %}

{#- dbt run-operation sqlflow_cards [--args '{model: churn_model, version: 2}']
    Rebuilds the model cards (target/sqlflow/cards/) of every ML model of the project from the registry
    alone, or one model's at a version, and the index. -#}
{% macro sqlflow_cards(model=none, version=none) %}
  {%- set nodes = [] -%}
  {%- for node in graph.nodes.values() -%}
    {%- if node.resource_type == 'model' and node.config.materialized in ('cluster', 'ml_train', 'sqlflow') -%}
      {%- do nodes.append({'name': node.name, 'database': node.database, 'schema': node.schema,
                           'identifier': node.alias or node.name,
                           'trains': node.config.materialized != 'sqlflow'}) -%}
    {%- endif -%}
  {%- endfor -%}
  {%- if model is not none and model not in (nodes | map(attribute='name') | list) -%}
    {%- do _sqlflow_model_relation(model) -%}
  {%- endif -%}
  {{ log(adapter.sqlflow_cards(nodes, model, version), info=true) }}
{% endmacro %}

{#- The relation of the ML model named `model` in this project (its alias and custom schema). -#}
{% macro _sqlflow_model_relation(model) %}
  {%- set found = [] -%}
  {%- for node in graph.nodes.values() -%}
    {%- if node.resource_type == 'model' and node.name == model -%}{%- do found.append(node) -%}{%- endif -%}
  {%- endfor -%}
  {%- if not found -%}
    {%- set ml = [] -%}
    {%- for node in graph.nodes.values() -%}
      {%- if node.resource_type == 'model' and node.config.materialized in ('cluster', 'ml_train', 'sqlflow') -%}
        {%- do ml.append(node.name) -%}
      {%- endif -%}
    {%- endfor -%}
    {{ exceptions.raise_compiler_error("sqlflow: no model named '" ~ model ~ "' in this project; its ML models are: "
                                       ~ (ml | sort | join(', ') or 'none')) }}
  {%- endif -%}
  {{ return(api.Relation.create(database=found[0].database, schema=found[0].schema,
                                identifier=found[0].alias or found[0].name)) }}
{% endmacro %}
