-- Size, share and mean return behaviour of each segment.
select * from {{ ml_profile(ref('customer_segments')) }}
