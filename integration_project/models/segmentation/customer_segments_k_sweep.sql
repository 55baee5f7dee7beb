-- The elbow method, recorded: inertia and silhouette for every k the automatic model tried.
select * from {{ ml_training_info(ref('customer_segments_auto')) }}
