-- SQLFlow's iris.train: four of every five flowers (no clause: an ordinary table)
select * from {{ ref('iris') }} where id % 5 <> 0
