{#-
  Score rows with a model trained by the dbt-sqlflow adapter, on any PostgreSQL dbt project
  (`type: postgres`, dbt Core or dbt Cloud). The adapter stores each k-means, EM, linear, logistic
  and sql4ml version's in-database scoring as SQL in its registry; this macro reads it and runs the same SELECT,
  so the results equal the adapter's ml_predict.

    {{ config(materialized='table') }}
    {{ sqlflow_scoring.ml_predict(source('ml', 'churn_model'), ref('customer_features'),
                                  output_probabilities=true) }}

  model:      the trained model's relation (a source, or a ref when the adapter project is this one)
  input:      a relation, or a SELECT as a string
  version:    a version number; default the live one
  registry:   the sqlflow_models table; default the one in the model's schema
-#}
{% macro ml_predict(model, input, version=none, pass_through=true, output_probabilities=false, registry=none) %}
  {%- set sql = input if (input is string and input.strip().lower().startswith(('select', 'with')))
                else 'select * from ' ~ input -%}
  {%- if not execute -%}{{ return(sql) }}{%- endif -%}
  {%- set registry = registry or (adapter.quote(model.database) ~ '.' ~ adapter.quote(model.schema) ~ '.'
                                  ~ adapter.quote('sqlflow_models')) -%}
  {%- set row = sqlflow_scoring._registry_row(model, registry, version, output_probabilities) -%}
  {%- set columns = get_columns_in_query(sql) -%}
  {%- set absent = [] -%}
  {%- for feature in (row.features or '').split(',') if row.model_type != 'sql' and feature and feature not in columns -%}
    {%- do absent.append(feature) -%}
  {%- endfor -%}
  {%- if absent -%}
    {{ exceptions.raise_compiler_error("sqlflow_scoring.ml_predict: model '" ~ model.identifier ~ "' v" ~ row.version
         ~ " was trained on " ~ absent | join(', ') ~ ", which the input does not return; its columns are: "
         ~ columns | join(', ')) }}
  {%- endif -%}
  {%- set keys = (row.key_columns or '').split(',') -%}
  {%- set kept = [] -%}
  {%- for column in columns if pass_through or column in keys -%}
    {%- do kept.append('__sqlflow_s.' ~ adapter.quote(column) ~ ', ') -%}
  {%- endfor -%}
  {{ return(row.template.replace('/*sqlflow:input*/', sql).replace('/*sqlflow:kept*/', kept | join(''))
                        .replace('/*sqlflow:version*/', row.version | string)) }}
{% endmacro %}


{#- The version's template, features and key, or an error saying what to do. -#}
{% macro _registry_row(model, registry, version, output_probabilities) %}
  {%- set query -%}
    select version, model_type,
           parameters -> 'scoring_sql' ->> '{{ 'probabilities' if output_probabilities else 'plain' }}' as template,
           (select string_agg(f ->> 'name', ',') from jsonb_array_elements(features -> 'features') as f) as features,
           (select string_agg(k, ',') from jsonb_array_elements_text(
              case jsonb_typeof(options -> 'key') when 'array' then options -> 'key'
                   when 'string' then jsonb_build_array(options -> 'key') else '[]'::jsonb end) as k) as key_columns
    from {{ registry }}
    where relation_database = '{{ model.database }}' and relation_schema = '{{ model.schema }}'
      and relation_identifier = '{{ model.identifier }}'
      and {{ ('version = ' ~ (version | int)) if version is not none else "status = 'live'" }}
  {%- endset -%}
  {%- set rows = run_query(query) -%}
  {%- if rows | length == 0 -%}
    {{ exceptions.raise_compiler_error("sqlflow_scoring.ml_predict: " ~ registry ~ " has no "
         ~ ('version ' ~ version if version is not none else 'live version') ~ " of " ~ model
         ~ "; train it with the dbt-sqlflow adapter (dbt run -s " ~ model.identifier ~ "), or pass registry= "
         ~ "when the registry is in another schema.") }}
  {%- endif -%}
  {%- set row = rows[0] -%}
  {%- if row.template is none -%}
    {{ exceptions.raise_compiler_error("sqlflow_scoring.ml_predict: " ~ model.identifier ~ " v" ~ row.version
         ~ " (" ~ row.model_type ~ ") has no stored scoring SQL. Plain dbt-postgres can score k-means, EM, "
         ~ "linear and logistic regression models trained by a dbt-sqlflow that stores it: retrain the model "
         ~ "with the adapter, or score it there with ml_predict.") }}
  {%- endif -%}
  {{ return(row) }}
{% endmacro %}
