{#- dbt docs generate: dbt-postgres' catalog, plus the live version's facts (type, version, trained at,
    rows, key metrics) as table stats of every ML node, shown on its page by dbt docs serve. -#}
{% macro sqlflow__get_catalog_relations(information_schema, relations) -%}
  {%- set table = postgres__get_catalog_relations(information_schema, relations) -%}
  {{ return(adapter.sqlflow_catalog_stats(table, information_schema.database)) }}
{%- endmacro %}

{% macro sqlflow__get_catalog(information_schema, schemas) -%}
  {%- set table = postgres__get_catalog(information_schema, schemas) -%}
  {{ return(adapter.sqlflow_catalog_stats(table, information_schema.database)) }}
{%- endmacro %}
