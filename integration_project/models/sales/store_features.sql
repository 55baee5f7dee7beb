{{ config(materialized='table') }}
-- Store features computed once per store: a one-hot encoding of the city.
select store_id, 'city=' || city as feature, 1.0::float8 as value from {{ ref('sales_stores') }}
