{{ config(materialized='cluster', model_type='kmeans', n_clusters=4, key='customer',
          features=['order_ratio', 'items_ratio', 'monetary_ratio', 'frequency'], n_init=4, seed=111) }}
select * from {{ ref('customer_returns') }}
