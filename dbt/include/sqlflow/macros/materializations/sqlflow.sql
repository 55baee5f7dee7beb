{#- A SQLFlow statement as the model body: a SELECT followed by TO TRAIN / TO PREDICT / TO EVALUATE /
    TO EXPLAIN (or TRAIN / PREDICT / ANALYZE). The clause picks the node's work (ml_train, ml_predict,
    a table of metrics, ml_explain) and its config; without a clause the SELECT becomes a table.
    The models it names must be ref()s, so that dbt builds them first and draws the edges. -#}
{% materialization sqlflow, adapter='sqlflow' %}
  {%- set statement = adapter.sqlflow_statement(model, sql, sqlflow_ref_relations()) -%}
  {{ return(sqlflow_ml_node(statement.materialization, side_suffixes=statement.side_suffixes, statement=statement)) }}
{% endmaterialization %}
