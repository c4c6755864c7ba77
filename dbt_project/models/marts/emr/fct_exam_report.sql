-- 检查报告：one row per exam report (institution_code, report_id): category, item, body part,
-- findings, conclusion and the abnormal flag, with the visit and person it belongs to. Exam
-- results are what the 检查检验结果互认 (mutual recognition) service shows other institutions.

with

reports as (

    select * from {{ ref('int_exam_reports_deduplicated') }}

),

encounters as (

    select institution_code, encounter_id, person_key from {{ ref('fct_encounter') }}

),

patients as (

    select * from {{ ref('int_patients_linked') }}

),

final as (

    select
        {{ hash_key(['reports.institution_code', 'reports.report_id']) }} as exam_report_key,
        {{ hash_key(['reports.institution_code', 'reports.encounter_id']) }} as encounter_key,
        coalesce(encounters.person_key, patients.person_key) as person_key,
        reports.institution_code,
        reports.report_id,
        reports.encounter_id,
        reports.patient_id,
        reports.accession_number,
        reports.exam_category,
        reports.exam_item_name,
        reports.body_part,
        reports.findings,
        reports.conclusion,
        reports.is_abnormal,
        reports.reporting_practitioner_id,
        reports.reported_at,
        reports._batch_id,
        reports._ingested_at
    from reports
    left join encounters
        on encounters.institution_code = reports.institution_code
        and encounters.encounter_id = reports.encounter_id
    left join patients
        on patients.institution_code = reports.institution_code
        and patients.patient_id = reports.patient_id

)

select * from final
