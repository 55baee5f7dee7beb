{{ config(materialized='table') }}
-- Purchase and return behaviour per customer and half-year: h1 (January-June) and h2 (July-December).
with sales as (
    select ss_customer_sk as customer, case when ss_sold_date < date '2026-07-01' then 'h1' else 'h2' end as period,
           ss_ticket_number, ss_item_sk, ss_net_paid
    from {{ ref('store_sales') }}
), returns as (
    select sr_customer_sk as customer, sr_ticket_number, sr_item_sk from {{ ref('store_returns') }}
)
select
    s.customer,
    s.period,
    count(distinct s.ss_ticket_number) as orders,
    count(*) as items,
    sum(s.ss_net_paid)::float8 as revenue,
    avg((r.sr_item_sk is not null)::int)::float8 as return_rate
from sales s
left join returns r
  on r.customer = s.customer and r.sr_ticket_number = s.ss_ticket_number and r.sr_item_sk = s.ss_item_sk
group by s.customer, s.period
