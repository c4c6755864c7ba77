-- 妇幼保健服务：one row per maternal or child health service (institution_code, visit_id):
-- antenatal care (产前检查), postpartum visits (产后访视), newborn visits (新生儿访视) and child
-- health checks (儿童健康检查), with the blood types typed at the first antenatal visit
-- (ABO: WS 364 CV04.50.005, Rh: WS 445; a value that maps to no code is kept, is_known_* false).
-- Incremental by a literal batch list against the row held (macros/incremental.sql,
-- newer_than_held), and the rows held whose person link changed (relinked_held: the row keeps
-- id_number_key, the keyed hash of its ID number, to be linked again by).
-- depends_on: {{ ref('stg_bronze__maternal_child_visits') }}

{{ config(materialized='incremental', unique_key='maternal_child_visit_key', incremental_strategy='delete+insert',
          on_schema_change='append_new_columns', pre_hook="{{ load_person_key_secret() }}") }}
{%- set incremental = held_has_column('id_number_key', is_incremental()) %}

with

visits as (

    select *
    {%- if incremental %}
    from ({{ newer_than_held(ref('stg_bronze__maternal_child_visits'), ['institution_code', 'visit_id']) }}) as new_versions
    {%- else %}
    from {{ ref('int_maternal_child_visits_deduplicated') }}
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

abo as (

    select * from {{ ref('ws364_abo_blood_type') }}

),

rh as (

    select * from {{ ref('ws445_rh_blood_type') }}

),

final as (

    select
        {{ hash_key(['visits.institution_code', 'visits.visit_id']) }} as maternal_child_visit_key,
        persons.person_key,
        {{ person_key('visits.id_number') }} as id_number_key,
        visits.institution_code,
        visits.visit_id,
        visits.service_type_code,
        case visits.service_type_code
            when '1' then '产前检查' when '2' then '产后访视' when '3' then '新生儿访视' when '4' then '儿童健康检查'
        end as service_type_name,
        visits.service_type_code in ('1', '2') as is_maternal,
        visits.visit_date,
        visits.visit_seq,
        visits.birth_date,
        -- age in whole months on the visit day (child health management is by month of age)
        cast(date_diff('month', visits.birth_date, visits.visit_date)
             - case when day(visits.visit_date) < day(visits.birth_date) then 1 else 0 end as integer) as age_months,
        visits.gestational_weeks,
        visits.weight_kg,
        visits.height_cm,
        visits.abo_blood_type_code,
        abo.name_zh as abo_blood_type_name,
        visits.rh_blood_type_code,
        'Rh' || rh.name_zh as rh_blood_type_name,
        visits.abo_blood_type_code is null or abo.code is not null as is_known_abo_code,
        visits.rh_blood_type_code is null or rh.code is not null as is_known_rh_code,
        visits.practitioner_id,
        visits._batch_id,
        visits._ingested_at
    from visits
    left join persons on persons.id_number = visits.id_number
    left join abo on abo.code = visits.abo_blood_type_code
    left join rh on rh.code = visits.rh_blood_type_code

)

select * from final
{%- if incremental %}
union all by name
{{ relinked_held(['institution_code', 'visit_id'], 'visits', 'persons.person_key',
    'left join persons_by_id_number_key as persons on persons.id_number_key = held.id_number_key') }}
{%- endif %}
