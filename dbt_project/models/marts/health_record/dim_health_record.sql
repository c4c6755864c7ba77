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

divisions as (

    select * from {{ ref('int_divisions_resolved') }}

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
        -- a retired code as sent (510122 双流县) resolves to the code that replaced it (510116 双流区)
        divisions.current_division_code,
        divisions.current_division_name,
        divisions.division_code is not null as is_known_division,
        health_records.created_date,
        health_records.is_valid_created_date,
        health_records._batch_id,
        health_records._ingested_at
    from health_records
    left join identities
        on identities.institution_code = health_records.institution_code
        and identities.source_id = health_records.record_id
    left join divisions
        on divisions.division_code = health_records.address_division_code

)

select * from final
