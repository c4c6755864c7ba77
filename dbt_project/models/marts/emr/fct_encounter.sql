{{ config(materialized='incremental', unique_key='encounter_key', incremental_strategy='delete+insert',
          on_schema_change='append_new_columns') }}

-- 就诊：one row per encounter (institution_code, encounter_id) — outpatient, emergency and
-- inpatient visits, the latest version each institution sent.
-- Incremental by batch (macros/incremental.sql): a run rebuilds the encounters that new encounter
-- or diagnosis batches touched, those whose person link went stale or moved with their patient,
-- and those without a person.
-- depends_on: {{ ref('stg_bronze__encounters') }} {{ ref('stg_bronze__diagnoses') }} {{ ref('dim_person') }}
-- depends_on: {{ ref('int_identities_linked') }} {{ ref('int_patients_linked') }}

{%- set keys = ['institution_code', 'encounter_id'] %}
{%- if is_incremental() %}
{#- diagnoses decide the principal diagnosis: an encounter is touched by a diagnosis batch that
    fct_diagnosis (built after this model, so still as of the previous run) has not seen -#}
{%- set diagnoses_seen = adapter.get_relation(this.database, this.schema, 'fct_diagnosis') %}
{#- besides stale_person_keys (a person merged away): an encounter linked through its patient
    whose patient now belongs to another person (who may still exist), and every encounter
    without a person (its ID number or patient may be known now): their versions are read anyway -#}
{%- set extra -%}
    {{ stale_person_keys(keys) }}
    union
    select fact.institution_code, fact.encounter_id
    from {{ this }} as fact
    left join {{ ref('int_patients_linked') }} as patients
        on patients.institution_code = fact.institution_code
        and patients.patient_id = fact.patient_id
    where fact.person_key is null
       or (fact.person_link_method = 'patient_id' and fact.person_key is distinct from patients.person_key)
{%- endset %}
{%- if diagnoses_seen is not none %}
{%- set extra = extra ~ ' union ' ~ touched_keys(ref('stg_bronze__diagnoses'), keys, seen_relation=diagnoses_seen) %}
{%- endif %}
{%- set touched -%}
    {{ touched_keys(ref('stg_bronze__encounters'), keys, extra) }}
{%- endset %}
{%- endif %}

with
{%- if is_incremental() %}

-- the touched keys, computed once (both the encounters and their principal diagnoses read them)
touched_encounters as materialized (

    {{ touched }}

),
{%- endif %}

encounters as (

    {%- if is_incremental() %}
    {{ link_encounters(latest_per_key_of(ref('stg_bronze__encounters'), keys, 'select * from touched_encounters')) }}
    {%- else %}
    select * from {{ ref('int_encounters_linked') }}
    {%- endif %}

),

primary_diagnoses as (

    -- diagnosis_seq 1 is the principal diagnosis (主要诊断); if an institution sent two, the later
    select institution_code, encounter_id, diagnosis_code
    {%- if is_incremental() %}
    from ({{ latest_per_key_of(ref('stg_bronze__diagnoses'), ['institution_code', 'diagnosis_id'],
                               'select institution_code, diagnosis_id from ' ~ ref('stg_bronze__diagnoses')
                               ~ ' semi join touched_encounters as t using (institution_code, encounter_id)') }})
    {%- else %}
    from {{ ref('int_diagnoses_deduplicated') }}
    {%- endif %}
    where diagnosis_seq = 1
    qualify row_number() over (
        partition by institution_code, encounter_id
        order by diagnosed_at desc nulls last, _ingested_at desc, diagnosis_id desc
    ) = 1

),

visit_types as (

    select * from {{ ref('ws445_visit_type') }}

),

final as (

    select
        {{ hash_key(['encounters.institution_code', 'encounters.encounter_id']) }} as encounter_key,
        encounters.person_key,
        encounters.person_link_method,
        encounters.institution_code,
        encounters.encounter_id,
        encounters.patient_id,
        encounters.visit_type_code,
        visit_types.name_zh as visit_type_name,
        encounters.department_code,
        {{ hash_key(['encounters.institution_code', 'encounters.department_code']) }} as department_key,
        encounters.practitioner_id,
        {{ hash_key(['encounters.institution_code', 'encounters.practitioner_id']) }} as practitioner_key,
        encounters.visit_at,
        encounters.discharge_at,
        -- 实际住院天数: discharge date − admission date, a same-day stay counts as one day
        -- (卫生统计: 入院当日与出院当日合计一日); null for visits that are not inpatient, not yet
        -- discharged, or discharged before admission (a data error the quality rules report)
        case
            when encounters.visit_type_code = '3' and encounters.discharge_at >= encounters.visit_at
                then cast(greatest(date_diff('day', cast(encounters.visit_at as date), cast(encounters.discharge_at as date)), 1) as integer)
        end as length_of_stay_days,
        primary_diagnoses.diagnosis_code as primary_diagnosis_code,
        encounters.total_fee,
        encounters.payment_method_code,
        encounters.version_count,
        encounters._batch_id,
        encounters._source_file,
        encounters._source_row,
        encounters._ingested_at
    from encounters
    left join primary_diagnoses
        on primary_diagnoses.institution_code = encounters.institution_code
        and primary_diagnoses.encounter_id = encounters.encounter_id
    left join visit_types
        on visit_types.code = encounters.visit_type_code

)

select * from final
