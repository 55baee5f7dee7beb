{{ config(materialized='cluster', model_type='kmeans', n_clusters=0, k_range=[2, 8], key='customer',
          features=['order_ratio', 'items_ratio', 'monetary_ratio', 'frequency'], seed=111) }}
select * from {{ ref('customer_returns') }}
