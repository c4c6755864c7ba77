{{ config(materialized='incremental', unique_key='procedure_key', incremental_strategy='delete+insert',
          on_schema_change='append_new_columns') }}

-- 手术操作：one row per procedure record (institution_code, procedure_id), ICD-9-CM-3 coded
-- ('01011' → '01.011'); a code not in the national table is kept with is_known_procedure_code
-- false and listed in resource.unmapped_code.
-- Incremental by a literal batch list (macros/incremental.sql, newer_than_held): a run reads only the
-- new procedure batches' rows (the latest version of each key among them replaces the row held when it
-- is later) and re-links the rows held whose person link changed (relinked_held).
-- depends_on: {{ ref('stg_bronze__procedures') }}

with

procedures as (

    {%- if is_incremental() %}
    select * from ({{ newer_than_held(ref('stg_bronze__procedures'), ['institution_code', 'procedure_id']) }}) as new_versions
    {%- else %}
    select * from {{ ref('int_procedures_deduplicated') }}
    {%- endif %}

),

encounters as (

    select institution_code, encounter_id, person_key from {{ ref('fct_encounter') }}

),

patients as (

    select * from {{ ref('int_patients_linked') }}

),

icd9 as (

    select * from {{ ref('icd9cm3_procedures') }}

),

final as (

    select
        {{ hash_key(['procedures.institution_code', 'procedures.procedure_id']) }} as procedure_key,
        {{ hash_key(['procedures.institution_code', 'procedures.encounter_id']) }} as encounter_key,
        coalesce(encounters.person_key, patients.person_key) as person_key,
        procedures.institution_code,
        procedures.procedure_id,
        procedures.encounter_id,
        procedures.patient_id,
        procedures.procedure_seq,
        procedures.procedure_code,
        procedures.procedure_name,
        icd9.name_zh as standard_procedure_name,
        procedures.is_valid_procedure_code,
        icd9.procedure_code is not null as is_known_procedure_code,
        procedures.procedure_level_code,
        procedures.anaesthesia_method_code,
        procedures.operator_id,
        procedures.department_code,
        procedures.procedure_at,
        procedures.procedure_end_at,
        case when procedures.procedure_end_at >= procedures.procedure_at
            then cast(date_diff('minute', procedures.procedure_at, procedures.procedure_end_at) as integer)
        end as duration_minutes,
        procedures._batch_id,
        procedures._ingested_at
    from procedures
    left join encounters
        on encounters.institution_code = procedures.institution_code
        and encounters.encounter_id = procedures.encounter_id
    left join patients
        on patients.institution_code = procedures.institution_code
        and patients.patient_id = procedures.patient_id
    left join icd9 on icd9.procedure_code = procedures.procedure_code
    {%- if is_incremental() %}

    union all

    {{ relinked_by_encounter(['institution_code', 'procedure_id'], 'procedures') }}
    {%- endif %}

)

select * from final
