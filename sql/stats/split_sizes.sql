-- title: Split sizes (videos and masklets)
-- reference: SA-V train 50,583 videos / 642,036 masklets; val 155 / 293; test 150 / 278 (sav_dataset README)
with s as (
    select video_id, split
    from splits
    qualify row_number() over (partition by video_id order by assigned_at nulls last) = 1
), m as (
    select video_id, count(*) as n from masklets group by video_id
)
select
    split,
    count(*) as videos,
    round(count(*) / sum(count(*)) over (), 4) as share,
    coalesce(sum(m.n), 0)::bigint as masklets,
    case split when 'train' then 50583 when 'val' then 155 when 'test' then 150 end as sav_reference_videos,
    case split when 'train' then 642036 when 'val' then 293 when 'test' then 278 end as sav_reference_masklets
from s
left join m using (video_id)
group by split
order by case split when 'train' then 0 when 'val' then 1 when 'test' then 2 else 3 end;
