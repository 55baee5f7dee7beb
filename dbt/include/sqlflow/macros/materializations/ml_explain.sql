{#- Why a model predicts what it predicts, for the node's SELECT: per-row attributions in long format
    (key, feature, value, attribution, baseline, prediction), and <node>__global with each feature's
    mean absolute attribution. k-means and EM: per cluster, the feature states that set it apart.
    The model must be ref'd in the body (-- depends_on: {{ ref('m') }}), as for ml_predict. -#}
{% materialization ml_explain, adapter='sqlflow' %}
  {%- do sqlflow_require_model_ref('ml_explain') -%}
  {{ return(sqlflow_ml_node('ml_explain', side_suffixes=['global'])) }}
{% endmaterialization %}
