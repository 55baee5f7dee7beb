-- BigQuery's ML.GLOBAL_EXPLAIN: the features ranked by mean absolute attribution (a table, no clause)
select * from {{ ml_global_explain(ref('iris_explained')) }}
