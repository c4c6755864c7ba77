-- 妇幼保健服务：one row per maternal or child health service (institution_code, visit_id):
-- antenatal care (产前检查), postpartum visits (产后访视), newborn visits (新生儿访视) and child
-- health checks (儿童健康检查), with the blood types typed at the first antenatal visit
-- (ABO: WS 364 CV04.50.005, Rh: WS 445; a value that maps to no code is kept, is_known_* false).

with

visits as (

    select * from {{ ref('int_maternal_child_visits_deduplicated') }}

),

persons as (

    select * from {{ ref('int_persons_by_id_number') }}

),

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
