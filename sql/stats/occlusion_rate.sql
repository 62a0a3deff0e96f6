-- title: Occlusion rate (masklets with at least one visibility change)
-- reference: SAM 2 paper Table 3 disappearance rate: SA-V Manual 42.5%, SA-V Manual+Auto 27.7% (closest published figure)
with m as (
    select 'all' as masklet_type, masklet_visibility_changes as changes from masklets
    union all
    select masklet_type, masklet_visibility_changes from masklets
)
select
    masklet_type,
    count(*) as masklets,
    count(*) filter (where changes >= 1) as occluded,
    round(count(*) filter (where changes >= 1) / count(*), 4) as rate,
    case masklet_type when 'all' then 0.277 when 'manual' then 0.425 end::double as sav_reference
from m
group by masklet_type
order by masklet_type <> 'all', masklet_type;
