-- The side table customer_segments__centroids as a model of its own, so the docs lineage shows it.
{{ config(materialized='view') }}
select * from {{ ml_centroids(ref('customer_segments')) }}
