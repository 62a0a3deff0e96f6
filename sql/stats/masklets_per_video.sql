-- title: Masklets per video
-- reference: SA-V 642.6K masklets / 50.9K videos = 12.6 (SAM 2 paper); manual 190,316 / 50,583 = 3.8, auto 451,720 / 48,436 videos with auto = 9.3 (sav_dataset README)
-- One row for all masklets and one per masklet_type; a type's figures are over the videos that have it.
with per_type as (
    select video_id, masklet_type, count(*) as n
    from masklets
    group by video_id, masklet_type
), per_video as (
    select video_id, 'all' as masklet_type, sum(n) as n from per_type group by video_id
    union all
    select video_id, masklet_type, n from per_type
)
select
    masklet_type,
    count(*) as videos,
    sum(n)::bigint as masklets,
    round(avg(n), 2) as mean_per_video,
    median(n)::double as median_per_video,
    max(n)::bigint as max_per_video,
    case masklet_type when 'all' then 12.6 when 'manual' then 3.8 when 'auto' then 9.3 end::double as sav_reference
from per_video
group by masklet_type
order by masklet_type <> 'all', masklet_type;
