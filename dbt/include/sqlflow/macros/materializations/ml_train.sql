{#- Train a model; the node's relation is its weights table (long format), every version registered. -#}
{% materialization ml_train, adapter='sqlflow' %}
  {{ return(sqlflow_ml_node('ml_train')) }}
{% endmaterialization %}
