-- title: Videos by status
-- reference: SA-V publishes only accepted videos (50,583 train + 155 val + 150 test); no rejection counts
-- status: ingest status when not ok (quarantined, ...), else the latest quality verdict
-- (accepted / rejected), or not_evaluated when no verdict exists yet.
with v as (
    select video_id, status
    from videos
    qualify row_number() over (partition by video_id order by ingested_at desc nulls last) = 1
), q as (
    select video_id, passed
    from video_quality
    qualify row_number() over (partition by video_id order by evaluated_at desc nulls last) = 1
)
select
    case
        when v.status is distinct from 'ok' then coalesce(v.status, 'unknown')
        when q.passed then 'accepted'
        when not q.passed then 'rejected'
        else 'not_evaluated'
    end as status,
    count(*) as videos,
    round(count(*) / sum(count(*)) over (), 4) as share
from v
left join q using (video_id)
group by 1
order by videos desc, status;
