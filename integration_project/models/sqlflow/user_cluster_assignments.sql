SELECT user_id, planted_group, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10 FROM {{ ref('users') }}
TO PREDICT user_cluster_assignments.group_id
USING {{ ref('user_clusters') }};
