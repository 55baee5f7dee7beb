-- Return behaviour per customer, the four features of SQL Server ML Services' customer-clustering
-- tutorial: the share of orders, items and money returned, and the number of returned orders.
with orders as (
    select ss_customer_sk as customer,
           count(distinct ss_ticket_number) as orders_count,
           count(ss_item_sk) as orders_items,
           sum(ss_net_paid) as orders_money
    from {{ ref('store_sales') }}
    group by ss_customer_sk
), returned as (
    select sr_customer_sk as customer,
           count(distinct sr_ticket_number) as returns_count,
           count(sr_item_sk) as returns_items,
           sum(sr_return_amt) as returns_money
    from {{ ref('store_returns') }}
    group by sr_customer_sk
)
select
    orders.customer,
    round(coalesce(returns_count / nullif(1.0 * orders_count, 0), 0), 7)::float8 as order_ratio,
    round(coalesce(returns_items / nullif(1.0 * orders_items, 0), 0), 7)::float8 as items_ratio,
    round(coalesce(returns_money / nullif(1.0 * orders_money, 0), 0), 7)::float8 as monetary_ratio,
    coalesce(returns_count, 0) as frequency
from orders
left join returned using (customer)
