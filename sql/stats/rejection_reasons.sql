-- title: Rejection reasons (videos failing the quality filter)
-- reference: none published for SA-V (its filtering happened before release)
-- A video can have several reasons, so shares add up to more than 1.
with q as (
    select video_id, passed, reasons
    from video_quality
    qualify row_number() over (partition by video_id order by evaluated_at desc nulls last) = 1
), rejected as (
    select video_id, reasons from q where not passed
)
select
    reason,
    count(distinct video_id) as videos,
    round(count(distinct video_id) / (select count(*) from rejected), 4) as share_of_rejected
from rejected, unnest(rejected.reasons) as t(reason)
group by reason
order by videos desc, reason;
