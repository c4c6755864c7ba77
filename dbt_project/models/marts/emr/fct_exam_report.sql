{{ config(materialized='incremental', unique_key='exam_report_key', incremental_strategy='delete+insert',
          on_schema_change='append_new_columns') }}

-- 检查报告：one row per exam report (institution_code, report_id): category, item, body part,
-- findings, conclusion and the abnormal flag, with the visit and person it belongs to. Exam
-- results are what the 检查检验结果互认 (mutual recognition) service shows other institutions.
-- Incremental by a literal batch list (macros/incremental.sql, newer_than_held): a run reads only the
-- new exam report batches' rows (the latest version of each key among them replaces the row held when it
-- is later) and re-links the rows held whose person link changed (relinked_held).
-- depends_on: {{ ref('stg_bronze__exam_reports') }}

with

reports as (

    {%- if is_incremental() %}
    select * from ({{ newer_than_held(ref('stg_bronze__exam_reports'), ['institution_code', 'report_id']) }}) as new_versions
    {%- else %}
    select * from {{ ref('int_exam_reports_deduplicated') }}
    {%- endif %}

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
    {%- if is_incremental() %}

    union all

    {{ relinked_by_encounter(['institution_code', 'report_id'], 'reports') }}
    {%- endif %}

)

select * from final
