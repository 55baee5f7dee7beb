-- SQLFlow's result table: the average behaviour of each group.
select cluster_id as group_id, count(*) as users,
       {% for i in range(1, 11) %}avg(m{{ i }}) as avg_m{{ i }}{{ "," if not loop.last }} {% endfor %}
from {{ ref('user_groups') }}
group by cluster_id
order by cluster_id
