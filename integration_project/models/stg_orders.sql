-- One row per order, typed and renamed from the raw seed.
select
    order_id,
    customer_id,
    ordered_at::date as ordered_at,
    status,
    amount::numeric(10, 2) as amount,
    status = 'returned' as is_returned
from {{ ref('raw_orders') }}
