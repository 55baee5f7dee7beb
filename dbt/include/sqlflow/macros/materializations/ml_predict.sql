{#- Score the node's SELECT with a registered model. The model must be ref'd in the body, so that
    dbt builds it first and draws the lineage edge. -#}
{% materialization ml_predict, adapter='sqlflow' %}
  {%- do sqlflow_require_model_ref('ml_predict') -%}
  {{ return(sqlflow_ml_node('ml_predict')) }}
{% endmaterialization %}


{#- config(model=...) names a model this node must ref. -#}
{% macro sqlflow_require_model_ref(materialization) %}
  {%- set trained = config.require('model') -%}
  {%- set ns = namespace(found=false) -%}
  {%- for node_id in model.depends_on.nodes -%}
    {%- if node_id.split('.')[-1] == trained -%}{%- set ns.found = true -%}{%- endif -%}
  {%- endfor -%}
  {%- if not ns.found -%}
    {{ exceptions.raise_compiler_error(
         materialization ~ " model '" ~ model.name ~ "' uses model='" ~ trained ~ "' but does not ref it, so dbt "
         ~ "cannot build it first or show the edge. Add this line to the model's SQL:\n"
         ~ "  -- depends_on: {{ ref('" ~ trained ~ "') }}") }}
  {%- endif -%}
{% endmacro %}
