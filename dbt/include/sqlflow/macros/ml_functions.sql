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

{% macro _sqlflow_latest(relation) -%}
  (select * from {{ sqlflow_registry_relation() }}
   where {{ _sqlflow_rows_of(relation) }}
   order by version desc limit 1)
{%- endmacro %}

{% macro ml_centroids(relation) -%}
  {{ _sqlflow_side(relation, 'centroids') }}
{%- endmacro %}

{% macro ml_profile(relation) -%}
  {{ _sqlflow_side(relation, 'profile') }}
{%- endmacro %}

{% macro ml_weights(relation) -%}
  {{ relation }}
{%- endmacro %}

{% macro ml_versions(relation, alias='ml_versions') -%}
  (select model_name, version, model_type, materialization, row_count, metrics, options, trained_at,
          invocation_id, input_fingerprint, unique_id
   from {{ sqlflow_registry_relation() }}
   where {{ _sqlflow_rows_of(relation) }}) as {{ adapter.quote(alias) }}
{%- endmacro %}

{% macro ml_evaluate(relation, alias='ml_evaluate') -%}
  (select latest.model_name, latest.version, m.key as metric,
          case when jsonb_typeof(m.value) = 'number' then (m.value #>> '{}')::float8 end as value
   from {{ _sqlflow_latest(relation) }} as latest, jsonb_each(latest.metrics) as m) as {{ adapter.quote(alias) }}
{%- endmacro %}

{% macro ml_training_info(relation, alias='ml_training_info') -%}
  (select latest.model_name, latest.version, s.k, s.inertia, s.silhouette, s.davies_bouldin,
          s.calinski_harabasz, s.bic, s.aic, s.chosen,
          (latest.training_info ->> 'iterations')::int as iterations
   from {{ _sqlflow_latest(relation) }} as latest
   left join lateral jsonb_to_recordset(latest.training_info -> 'k_sweep')
        as s(k int, inertia float8, silhouette float8, davies_bouldin float8, calinski_harabasz float8,
             bic float8, aic float8, chosen boolean) on true) as {{ adapter.quote(alias) }}
{%- endmacro %}

{% macro ml_feature_info(relation, alias='ml_feature_info') -%}
  (select latest.model_name, latest.version, f.ordinality::int as position, f.value ->> 'name' as column_name,
          f.value ->> 'kind' as kind, (f.value ->> 'center')::float8 as center, (f.value ->> 'scale')::float8 as scale,
          f.value ->> 'impute' as impute_value, f.value -> 'states' as states,
          (f.value ->> 'other')::boolean as has_other, (f.value ->> 'indicator')::boolean as has_missing_indicator
   from {{ _sqlflow_latest(relation) }} as latest,
        jsonb_array_elements(latest.features -> 'features') with ordinality as f(value, ordinality)) as {{ adapter.quote(alias) }}
{%- endmacro %}
