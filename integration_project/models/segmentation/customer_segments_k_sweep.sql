-- The elbow method, recorded: inertia and silhouette for every k the automatic model tried.
select * from {{ ml_k_sweep(ref('customer_segments_auto')) }}
