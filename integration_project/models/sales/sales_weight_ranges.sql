-- The paper's "examine the range of weights" query: the weights are a table, so plain SQL reads them.
select tensor, count(*) as weights, min(value) as lowest, max(value) as highest,
       max(abs(value)) as largest_magnitude
from {{ ref('sales_model') }}
group by tensor
