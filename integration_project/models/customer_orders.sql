{{ config(materialized='table') }}
-- Order and return behaviour per customer: the kind of feature table the ML examples build on.
select
    customer_id,
    count(*) as orders,
    sum(amount) as revenue,
    avg(is_returned::int)::float8 as return_rate,
    min(ordered_at) as first_order_at,
    max(ordered_at) as last_order_at
from {{ ref('stg_orders') }}
group by customer_id
