-- 老年人健康体检：one row per annual health check of a resident aged 65 or over
-- (institution_code, check_id), with BMI and the screening flags of the 国家基本公共卫生服务规范:
-- blood pressure ≥ 140/90 mmHg and fasting glucose ≥ 7.0 mmol/L are abnormal; 生活自理能力评分
-- 0–3 可自理, 4–8 轻度依赖, 9–18 中度依赖, ≥ 19 不能自理.
-- Incremental by a literal batch list against the row held (macros/incremental.sql,
-- newer_than_held), and the rows held whose person link changed (relinked_held: the row keeps
-- id_number_key, the keyed hash of its ID number, to be linked again by).
-- depends_on: {{ ref('stg_bronze__elderly_health_checks') }}

{{ config(materialized='incremental', unique_key='elderly_check_key', incremental_strategy='delete+insert',
          on_schema_change='append_new_columns', pre_hook="{{ load_person_key_secret() }}") }}
{%- set incremental = held_has_column('id_number_key', is_incremental()) %}

with

checks as (

    select *
    {%- if incremental %}
    from ({{ newer_than_held(ref('stg_bronze__elderly_health_checks'), ['institution_code', 'check_id']) }}) as new_versions
    {%- else %}
    from {{ ref('int_elderly_health_checks_deduplicated') }}
    {%- endif %}

),

persons as (

    select * from {{ ref('int_persons_by_id_number') }}

),
{%- if incremental %}

persons_by_id_number_key as (

    select {{ person_key('id_number') }} as id_number_key, person_key from persons

),
{%- endif %}

records as (

    select institution_code, source_id as record_id, person_key
    from {{ ref('int_identities_linked') }}
    where source_dataset = 'health_record' and person_key is not null

),

final as (

    select
        {{ hash_key(['checks.institution_code', 'checks.check_id']) }} as elderly_check_key,
        coalesce(persons.person_key, records.person_key) as person_key,
        {{ person_key('checks.id_number') }} as id_number_key,
        checks.institution_code,
        checks.check_id,
        checks.record_id,
        checks.check_date,
        checks.systolic_bp,
        checks.diastolic_bp,
        checks.fasting_glucose,
        checks.height_cm,
        checks.weight_kg,
        cast(case when checks.height_cm > 0
            then round(checks.weight_kg / ((checks.height_cm / 100) * (checks.height_cm / 100)), 1) end
            as decimal(5, 1)) as bmi,
        checks.systolic_bp >= 140 or checks.diastolic_bp >= 90 as is_bp_high,
        checks.fasting_glucose >= 7.0 as is_glucose_high,
        checks.self_care_score,
        case
            when checks.self_care_score between 0 and 3 then '可自理'
            when checks.self_care_score between 4 and 8 then '轻度依赖'
            when checks.self_care_score between 9 and 18 then '中度依赖'
            when checks.self_care_score >= 19 then '不能自理'
        end as self_care_level,
        checks.practitioner_id,
        checks._batch_id,
        checks._ingested_at
    from checks
    left join persons on persons.id_number = checks.id_number
    left join records
        on records.institution_code = checks.institution_code
        and records.record_id = checks.record_id

)

select * from final
{%- if incremental %}
union all by name
{{ relinked_held(['institution_code', 'check_id'], 'checks',
    'coalesce(persons.person_key, records.person_key)',
    'left join persons_by_id_number_key as persons on persons.id_number_key = held.id_number_key
left join records on records.institution_code = held.institution_code and records.record_id = held.record_id') }}
{%- endif %}
