{#-
  Generic tests for schema.yml, on the live version of a model:
    models:
      - name: churn_model
        data_tests:
          - sqlflow_metric: {arguments: {metric: roc_auc, min: 0.7}}
      - name: segments
        data_tests:
          - sqlflow_cluster_sizes: {arguments: {min_share: 0.05}}
      - name: churn_scores
        data_tests:
          - sqlflow_drift: {arguments: {threshold: 0.2}, config: {severity: warn}}
  Each returns one row per problem, so `store_failures` keeps a readable table of them.
-#}

{#- The dbt node whose relation is `relation`, or none. -#}
{% macro _sqlflow_node_of(relation) %}
  {%- for node in graph.nodes.values() -%}
    {%- if node.resource_type in ('model', 'seed', 'snapshot')
          and (node.alias or node.name) == relation.identifier and node.schema == relation.schema -%}
      {{ return(node) }}
    {%- endif -%}
  {%- endfor -%}
  {{ return(none) }}
{% endmacro %}

{#- The trained model behind a tested relation: `ml_model` when given, the model an ml_predict node
    scores with, or the ML node itself. Returns (relation, name). -#}
{% macro _sqlflow_trained_model(relation, ml_model) %}
  {%- if not execute -%}{{ return((relation, relation.identifier)) }}{%- endif -%}  {#- parsing: no graph yet -#}
  {%- if ml_model is not none -%}
    {{ return((_sqlflow_model_relation(ml_model), ml_model)) }}
  {%- endif -%}
  {%- set node = _sqlflow_node_of(relation) -%}
  {%- if node is not none and node.config.materialized == 'ml_predict' -%}
    {{ return((_sqlflow_model_relation(node.config.model), node.config.model)) }}
  {%- endif -%}
  {{ return((relation, node.name if node is not none else relation.identifier)) }}
{% endmacro %}

{% test sqlflow_metric(model, metric, min=none, max=none, ml_model=none) %}
  {%- if execute and min is none and max is none -%}
    {{ exceptions.raise_compiler_error("sqlflow_metric on " ~ model.identifier ~ " needs min or max (or both): "
                                       ~ "arguments: {metric: " ~ metric ~ ", min: 0.7}") }}
  {%- endif -%}
  {%- for bound in [min, max] if execute and bound is not none and (bound is not number or bound is sameas true
                                                                    or bound is sameas false) -%}
    {{ exceptions.raise_compiler_error("sqlflow_metric on " ~ model.identifier ~ ": min and max are numbers, got "
                                       ~ bound ~ ": arguments: {metric: " ~ metric ~ ", min: 0.7}") }}
  {%- endfor -%}
  {%- set trained, name = _sqlflow_trained_model(model, ml_model) -%}
  {%- set value = "coalesce(live.metrics -> ('eval_' || " ~ _sqlflow_literal(metric) ~ "), live.metrics -> "
                  ~ _sqlflow_literal(metric) ~ ")" -%}
  select * from (
    select {{ _sqlflow_literal(name) }} as model_name, live.version, {{ _sqlflow_literal(metric) }} as metric, v.value,
           case
             when live.version is null then 'no live version: train it or promote one'
             when v.value is null then 'the live version has no metric ' || {{ _sqlflow_literal(metric) }} || '; it has: '
                  || (select string_agg(k, ', ' order by k) from jsonb_object_keys(live.metrics) as k)
             {%- if min is not none %}
             when v.value < {{ min }} then 'below min ' || {{ min }}
             {%- endif %}
             {%- if max is not none %}
             when v.value > {{ max }} then 'above max ' || {{ max }}
             {%- endif %}
           end as problem
    from (select 1) as one
    left join {{ _sqlflow_latest(trained) }} as live on true
    left join lateral (select case when jsonb_typeof({{ value }}) = 'number' then ({{ value }} #>> '{}')::float8 end as value) as v on true
  ) as checked
  where problem is not null
{% endtest %}

{#- Every cluster holds at least min_share of the rows; a cluster of the model with no rows at all
    (known from the cluster node's centroids) fails too. -#}
{% test sqlflow_cluster_sizes(model, min_share, column_name='cluster_id') %}
  {%- if execute and (min_share is not number or min_share is sameas true or min_share is sameas false
                      or min_share <= 0 or min_share >= 1) -%}
    {{ exceptions.raise_compiler_error("sqlflow_cluster_sizes on " ~ model.identifier ~ ": min_share is the "
                                       ~ "smallest share of rows a cluster may hold, between 0 and 1 (e.g. 0.05), got "
                                       ~ min_share) }}
  {%- endif -%}
  {%- set centroids = adapter.get_relation(database=model.database, schema=model.schema,
                        identifier=adapter.sqlflow_side_identifier(model.identifier, 'centroids')) if execute else none -%}
  with sizes as (
    select {{ adapter.quote(column_name) }} as cluster_id, count(*) as n_rows
    from {{ model }} where {{ adapter.quote(column_name) }} is not null group by 1
  ),
  {%- if centroids is not none %}
  clusters as (select distinct cluster_id from {{ centroids }} union select cluster_id from sizes),
  {%- else %}
  clusters as (select cluster_id from sizes),
  {%- endif %}
  total as (select sum(n_rows)::float8 as n from sizes)
  select c.cluster_id, coalesce(s.n_rows, 0) as n_rows, coalesce(s.n_rows, 0) / nullif(total.n, 0) as share,
         {{ min_share }} as min_share
  from clusters as c cross join total left join sizes as s on s.cluster_id = c.cluster_id
  where coalesce(s.n_rows, 0) / nullif(total.n, 0) < {{ min_share }}
{% endtest %}

{#- Population stability index per feature of the tested relation against the training profile of
    the model's live version; the rows are the features above `threshold`. -#}
{% test sqlflow_drift(model, threshold=0.2, features=none, ml_model=none) %}
  {%- if execute -%}
    {%- set trained, name = _sqlflow_trained_model(model, ml_model) -%}
    {{ adapter.sqlflow_drift_sql(model, trained, name, threshold, features) }}
  {%- else -%}
    select null::text as feature, null::float8 as psi, null::float8 as threshold where false
  {%- endif -%}
{% endtest %}
