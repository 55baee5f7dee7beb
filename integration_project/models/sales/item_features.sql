{{ config(materialized='table') }}
-- Item features computed once per item (the paper's precomputation), in long format (id, name, value):
-- a one-hot encoding of the product family, and perishability.
select item_id, 'family=' || family as feature, 1.0::float8 as value from {{ ref('sales_items') }}
union all
select item_id, 'perishable', perishable::float8 from {{ ref('sales_items') }}
