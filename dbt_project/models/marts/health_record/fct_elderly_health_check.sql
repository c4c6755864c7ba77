-- 老年人健康体检：one row per annual health check of a resident aged 65 or over
-- (institution_code, check_id), with BMI and the screening flags of the 国家基本公共卫生服务规范:
-- blood pressure ≥ 140/90 mmHg and fasting glucose ≥ 7.0 mmol/L are abnormal; 生活自理能力评分
-- 0–3 可自理, 4–8 轻度依赖, 9–18 中度依赖, ≥ 19 不能自理.

with

checks as (

    select * from {{ ref('int_elderly_health_checks_deduplicated') }}

),

persons as (

    select * from {{ ref('int_persons_by_id_number') }}

),

records as (

    select institution_code, source_id as record_id, person_key
    from {{ ref('int_identities_linked') }}
    where source_dataset = 'health_record' and person_key is not null

),

final as (

    select
        {{ hash_key(['checks.institution_code', 'checks.check_id']) }} as elderly_check_key,
        coalesce(persons.person_key, records.person_key) as person_key,
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
