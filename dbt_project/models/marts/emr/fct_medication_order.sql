-- 用药医嘱：one row per prescription / medication order (institution_code, order_id).

with

orders as (

    select * from {{ ref('int_prescriptions_deduplicated') }}

),

encounters as (

    select institution_code, encounter_id, person_key from {{ ref('int_encounters_linked') }}

),

patients as (

    select * from {{ ref('int_patients_linked') }}

),

final as (

    select
        {{ hash_key(['orders.institution_code', 'orders.order_id']) }} as order_key,
        {{ hash_key(['orders.institution_code', 'orders.encounter_id']) }} as encounter_key,
        coalesce(encounters.person_key, patients.person_key) as person_key,
        orders.institution_code,
        orders.order_id,
        orders.encounter_id,
        orders.patient_id,
        orders.drug_code,
        orders.drug_name,
        orders.dose,
        orders.dose_unit,
        orders.frequency,
        orders.days,
        orders.ordered_at,
        orders._batch_id,
        orders._ingested_at
    from orders
    left join encounters
        on encounters.institution_code = orders.institution_code
        and encounters.encounter_id = orders.encounter_id
    left join patients
        on patients.institution_code = orders.institution_code
        and patients.patient_id = orders.patient_id

)

select * from final
