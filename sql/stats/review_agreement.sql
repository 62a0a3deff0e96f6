-- title: Reviewers vs masklet QC (latest verdict per masklet)
-- reference: none published (SA-V's annotators verified every masklet; here QC is automatic)
-- qc_passed_human_rejected: QC let through what a person rejected; qc_failed_human_accepted: the reverse.
with rv as (
    select video_id, masklet_type, masklet_id, verdict
    from masklet_reviews
    where status = 'ok'
    qualify row_number() over (
        partition by video_id, masklet_type, masklet_id
        order by reviewed_at desc, recorded_at desc, source_file desc, source_line desc) = 1
), qc as (
    select video_id, masklet_type, masklet_id, passed
    from masklet_qc
    qualify row_number() over (
        partition by video_id, masklet_type, masklet_id order by evaluated_at desc nulls last) = 1
)
select rv.masklet_type,
       count(*) as reviewed,
       count(*) filter (where rv.verdict = 'reject') as rejected,
       count(*) filter (where qc.passed and rv.verdict = 'reject') as qc_passed_human_rejected,
       count(*) filter (where not qc.passed and rv.verdict = 'accept') as qc_failed_human_accepted,
       count(*) filter (where qc.passed is null) as no_qc_verdict,
       round(count(*) filter (where qc.passed = (rv.verdict = 'accept'))
             / nullif(count(*) filter (where qc.passed is not null), 0), 4) as agreement
from rv
left join qc using (video_id, masklet_type, masklet_id)
group by rv.masklet_type
order by rv.masklet_type;
