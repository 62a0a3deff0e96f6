-- title: Masklet types and sources
-- reference: SA-V train: manual 190,316 (29.6%), auto 451,720 (70.4%) of 642,036 masklets (sav_dataset README)
select
    masklet_type,
    coalesce(source, 'unknown') as source,
    count(*) as masklets,
    count(distinct video_id) as videos,
    round(count(*) / sum(count(*)) over (), 4) as share,
    case masklet_type when 'manual' then 0.2964 when 'auto' then 0.7036 end::double as sav_reference_share
from masklets
group by masklet_type, source
order by masklets desc, masklet_type, source;
