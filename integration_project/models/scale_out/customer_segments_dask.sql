-- customer_segments on engine='dask': the same model file plus two keys. Here a local cluster of two
-- worker processes; in production, dask_scheduler='tcp://<scheduler>:8786' (or the profile's default).
-- Each worker reads its own shard of the SELECT from PostgreSQL and writes its rows' assignments.
{{ config(materialized='cluster', model_type='kmeans', n_clusters=4, key='customer',
          features=['order_ratio', 'items_ratio', 'monetary_ratio', 'frequency'], n_init=4, seed=111,
          engine='dask', dask_scheduler='local[2]') }}
select * from {{ ref('customer_returns') }}
