-- title: Masklet QC pass rates, overall and per reason
-- reference: none published for SA-V (its masklets were human-verified)
-- Row '(all checks)' is the verdict; every other row is the share of masklets not flagged by that reason.
with qc as (
    select video_id, masklet_type, masklet_id, passed, reasons
    from masklet_qc
    qualify row_number() over (
        partition by video_id, masklet_type, masklet_id order by evaluated_at desc nulls last) = 1
), tot as (
    select masklet_type, count(*) as masklets, count(*) filter (where passed) as passed
    from qc
    group by masklet_type
), flagged as (
    select masklet_type, reason, count(*) as flagged
    from qc, unnest(qc.reasons) as t(reason)
    group by masklet_type, reason
)
select masklet_type, '(all checks)' as reason, masklets, 0::bigint as flagged, passed,
       round(passed / masklets, 4) as pass_rate
from tot
union all
select f.masklet_type, f.reason, t.masklets, f.flagged, t.masklets - f.flagged as passed,
       round((t.masklets - f.flagged) / t.masklets, 4) as pass_rate
from flagged f
join tot t using (masklet_type)
order by masklet_type, reason <> '(all checks)', pass_rate, reason;
