-- title: Reappearance rate (masklets that disappear and reappear: at least two visibility changes)
-- reference: not published for SA-V under this definition; column left null
with m as (
    select 'all' as masklet_type, masklet_visibility_changes as changes from masklets
    union all
    select masklet_type, masklet_visibility_changes from masklets
)
select
    masklet_type,
    count(*) as masklets,
    count(*) filter (where changes >= 2) as reappearing,
    round(count(*) filter (where changes >= 2) / count(*), 4) as rate,
    null::double as sav_reference
from m
group by masklet_type
order by masklet_type <> 'all', masklet_type;
