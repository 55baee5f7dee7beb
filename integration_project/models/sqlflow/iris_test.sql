-- SQLFlow's iris.test: the fifth flower of every five
select * from {{ ref('iris') }} where id % 5 = 0
