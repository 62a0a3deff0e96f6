-- title: Masklet size-bucket mix (small < 32^2 <= medium < 96^2 <= large, mean visible area)
-- reference: SA-V publishes no bucket shares (only that 88% of its masks cover < 10% of the frame); column left null
with m as (
    select coalesce(masklet_size_bucket, 'unknown') as bucket, masklet_type from masklets
)
select
    bucket as masklet_size_bucket,
    count(*) as masklets,
    round(count(*) / sum(count(*)) over (), 4) as share,
    count(*) filter (where masklet_type = 'manual') as manual,
    count(*) filter (where masklet_type = 'auto') as auto,
    null::double as sav_reference
from m
group by bucket
order by case bucket when 'small' then 0 when 'medium' then 1 when 'large' then 2 else 3 end;
