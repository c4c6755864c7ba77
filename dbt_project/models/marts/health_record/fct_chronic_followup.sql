-- 慢病随访：one row per follow-up visit (institution_code, followup_id) of a hypertension or type 2
-- diabetes patient, with control status by the 国家基本公共卫生服务规范 targets:
-- hypertension controlled when systolic < 140 and diastolic < 90 mmHg; diabetes controlled when
-- fasting glucose < 7.0 mmol/L. Control is null when the measurement is missing.
-- Incremental by a literal batch list against the row held (macros/incremental.sql,
-- newer_than_held), and the rows held whose person link changed (relinked_held: the row
-- keeps id_number_key, the keyed hash of its ID number, to be linked again by).
-- depends_on: {{ ref('stg_bronze__chronic_followups') }}

{{ config(materialized='incremental', unique_key='followup_key', incremental_strategy='delete+insert',
          on_schema_change='append_new_columns', pre_hook="{{ load_person_key_secret() }}") }}
{%- set incremental = held_has_column('id_number_key', is_incremental()) %}

with

followups as (

    select *
    {%- if incremental %}
    from ({{ newer_than_held(ref('stg_bronze__chronic_followups'), ['institution_code', 'followup_id']) }}) as new_versions
    {%- else %}
    from {{ ref('int_chronic_followups_deduplicated') }}
    {%- endif %}

),

identities as (

    select * from {{ ref('int_identities_linked') }}
    where person_key is not null

),

persons_by_id_number as (

    select id_number, min(person_key) as person_key
    from identities
    group by id_number

),
{%- if incremental %}

persons_by_id_number_key as (

    select {{ person_key('id_number') }} as id_number_key, person_key
    from persons_by_id_number
    where id_number is not null

),
{%- endif %}

persons_by_record_id as (

    select institution_code, source_id as record_id, person_key
    from identities
    where source_dataset = 'health_record'

),

classified as (

    select
        followups.*,
        coalesce(by_id_number.person_key, by_record_id.person_key) as person_key,
        case
            when substr(followups.disease_code, 1, 3) between 'I10' and 'I15' then 'hypertension'
            when substr(followups.disease_code, 1, 3) between 'E10' and 'E14' then 'diabetes'
            else 'other'
        end as disease_type,
        followups.systolic_bp < 140 and followups.diastolic_bp < 90 as is_bp_controlled,
        followups.fasting_glucose < 7.0 as is_glucose_controlled
    from followups
    -- valid ID numbers only on that side: a plain equality (and a hash join) is enough
    left join persons_by_id_number as by_id_number
        on by_id_number.id_number = followups.id_number
    left join persons_by_record_id as by_record_id
        on by_record_id.institution_code = followups.institution_code
        and by_record_id.record_id = followups.record_id

),

final as (

    select
        {{ hash_key(['institution_code', 'followup_id']) }} as followup_key,
        {{ hash_key(['institution_code', 'record_id']) }} as record_key,
        person_key,
        {{ person_key('id_number') }} as id_number_key,
        institution_code,
        followup_id,
        record_id,
        practitioner_id,
        disease_code,
        disease_type,
        case disease_type when 'hypertension' then '高血压' when 'diabetes' then '糖尿病' else '其他' end
            as disease_type_name,
        followup_date,
        systolic_bp,
        diastolic_bp,
        fasting_glucose,
        is_bp_controlled,
        is_glucose_controlled,
        case disease_type
            when 'hypertension' then is_bp_controlled
            when 'diabetes' then is_glucose_controlled
        end as is_controlled,
        _batch_id,
        _ingested_at
    from classified

)

select * from final
{%- if incremental %}
union all by name
{{ relinked_held(['institution_code', 'followup_id'], 'followups',
    'coalesce(by_id_number.person_key, by_record_id.person_key)',
    'left join persons_by_id_number_key as by_id_number on by_id_number.id_number_key = held.id_number_key
left join persons_by_record_id as by_record_id
    on by_record_id.institution_code = held.institution_code and by_record_id.record_id = held.record_id') }}
{%- endif %}
