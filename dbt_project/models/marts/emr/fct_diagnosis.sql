{{ config(materialized='incremental', unique_key='diagnosis_key', incremental_strategy='delete+insert',
          on_schema_change='append_new_columns') }}

-- 诊断：one row per diagnosis record (institution_code, diagnosis_id), ICD-10 coded.
-- Incremental by a literal batch list (macros/incremental.sql, newer_than_held): a run reads only the
-- new diagnosis batches' rows (the latest version of each key among them replaces the row held when
-- it is later) and re-links the rows held whose person link changed (relinked_by_encounter).
-- fct_encounter reads this table's batches as of the previous run (the diagnoses it has not seen):
-- they are the batches of the rows kept, incremental or full.
-- depends_on: {{ ref('stg_bronze__diagnoses') }}

with

diagnoses as (

    select
        *,
        case when is_valid_diagnosis_code then substr(diagnosis_code, 1, 3) end as icd10_category_code
    {%- if is_incremental() %}
    from ({{ newer_than_held(ref('stg_bronze__diagnoses'), ['institution_code', 'diagnosis_id']) }}) as new_versions
    {%- else %}
    from {{ ref('int_diagnoses_deduplicated') }}
    {%- endif %}

),

encounters as (

    select institution_code, encounter_id, person_key from {{ ref('fct_encounter') }}

),

patients as (

    select * from {{ ref('int_patients_linked') }}

),

icd10_category as (

    select * from {{ ref('icd10_categories') }}

),

icd10_subcategory as (

    select * from {{ ref('icd10_subcategories') }}

),

final as (

    select
        {{ hash_key(['diagnoses.institution_code', 'diagnoses.diagnosis_id']) }} as diagnosis_key,
        {{ hash_key(['diagnoses.institution_code', 'diagnoses.encounter_id']) }} as encounter_key,
        coalesce(encounters.person_key, patients.person_key) as person_key,
        diagnoses.institution_code,
        diagnoses.diagnosis_id,
        diagnoses.encounter_id,
        diagnoses.patient_id,
        diagnoses.diagnosis_seq,
        coalesce(diagnoses.diagnosis_seq = 1, false) as is_primary,
        diagnoses.diagnosis_code,
        diagnoses.diagnosis_name,
        diagnoses.icd10_category_code,
        icd10_category.name_zh as icd10_category_name,
        diagnoses.is_valid_diagnosis_code,
        icd10_category.category_code is not null as is_known_icd10_category,
        -- in the national table: category, and the subcategory when the code names one
        {{ icd10_is_known('diagnoses.diagnosis_code') }} as is_known_icd10_code,
        diagnoses.diagnosed_at,
        diagnoses._batch_id,
        diagnoses._ingested_at
    from diagnoses
    left join encounters
        on encounters.institution_code = diagnoses.institution_code
        and encounters.encounter_id = diagnoses.encounter_id
    left join patients
        on patients.institution_code = diagnoses.institution_code
        and patients.patient_id = diagnoses.patient_id
    left join icd10_category
        on icd10_category.category_code = diagnoses.icd10_category_code
    left join icd10_subcategory
        on icd10_subcategory.subcategory_code = substr(diagnoses.diagnosis_code, 1, 5)
    {%- if is_incremental() %}

    union all

    {{ relinked_by_encounter(['institution_code', 'diagnosis_id'], 'diagnoses') }}
    {%- endif %}

)

select * from final
