-- First-half behaviour, labelled: churned = bought nothing in the second half.
select h1.customer, h1.orders, h1.items, h1.revenue, h1.return_rate,
       not exists (select 1 from {{ ref('customer_features') }} h2
                   where h2.customer = h1.customer and h2.period = 'h2') as churned
from {{ ref('customer_features') }} h1
where h1.period = 'h1'
