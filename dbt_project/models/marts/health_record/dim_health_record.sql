-- 居民健康档案：one row per resident health archive (institution_code, record_id), the latest
-- version the managing institution sent.

with

health_records as (

    select * from {{ ref('int_health_records_deduplicated') }}

),

identities as (

    select * from {{ ref('int_identities_linked') }}
    where source_dataset = 'health_record'

),

final as (

    select
        {{ hash_key(['health_records.institution_code', 'health_records.record_id']) }} as record_key,
        identities.person_key,
        health_records.institution_code as managing_institution_code,
        health_records.record_id,
        health_records.household_id,
        health_records.family_doctor_id,
        health_records.address_division_code,
        health_records.created_date,
        health_records.is_valid_created_date,
        health_records._batch_id,
        health_records._ingested_at
    from health_records
    left join identities
        on identities.institution_code = health_records.institution_code
        and identities.source_id = health_records.record_id

)

select * from final
