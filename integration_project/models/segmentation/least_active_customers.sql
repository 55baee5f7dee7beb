-- The tutorial's last step: the customers of the segment that returns least, to send a marketing email.
with least_active as (
    select cluster_id from {{ ref('segment_profile') }} order by frequency, order_ratio limit 1
)
select s.customer, s.order_ratio, s.items_ratio, s.monetary_ratio, s.frequency, s.cluster_id
from {{ ref('customer_segments') }} s
join least_active using (cluster_id)
