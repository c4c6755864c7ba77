-- 预防接种：one row per vaccination record (institution_code, immunization_id).

with

immunizations as (

    select * from {{ ref('int_immunizations_deduplicated') }}

),

identities as (

    select * from {{ ref('int_identities_linked') }}
    where source_dataset = 'immunization'

),

final as (

    select
        {{ hash_key(['immunizations.institution_code', 'immunizations.immunization_id']) }} as immunization_key,
        identities.person_key,
        immunizations.institution_code,
        immunizations.immunization_id,
        immunizations.vaccinating_institution_code,
        immunizations.vaccine_code,
        immunizations.vaccine_name,
        immunizations.dose_seq,
        immunizations.lot_number,
        immunizations.vaccinated_date,
        immunizations._batch_id,
        immunizations._ingested_at
    from immunizations
    left join identities
        on identities.institution_code = immunizations.institution_code
        and identities.source_id = immunizations.immunization_id

)

select * from final
