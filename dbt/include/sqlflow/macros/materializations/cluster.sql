{#- Train and assign in one node: the input rows with cluster_id, cluster_distance (and for EM
    cluster_probability), plus <model>__centroids and <model>__profile beside it. -#}
{% materialization cluster, adapter='sqlflow' %}
  {{ return(sqlflow_ml_node('cluster', side_suffixes=['centroids', 'profile'])) }}
{% endmaterialization %}
