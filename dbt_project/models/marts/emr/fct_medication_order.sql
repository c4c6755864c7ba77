{{ config(materialized='incremental', unique_key='order_key', incremental_strategy='delete+insert',
          on_schema_change='append_new_columns') }}

-- 用药医嘱：one row per prescription / medication order (institution_code, order_id).
-- Incremental by batch (macros/incremental.sql): a run rebuilds the rows that new batches touched
-- and those whose person link went stale; person_key through the encounter (fct_encounter) first.
-- depends_on: {{ ref('stg_bronze__prescriptions') }} {{ ref('dim_person') }} {{ ref('int_patients_linked') }}

with

orders as (

    {%- if is_incremental() %}
    {%- set keys = ['institution_code', 'order_id'] %}
    {{ latest_per_key_of(ref('stg_bronze__prescriptions'), keys, touched_keys(ref('stg_bronze__prescriptions'), keys, stale_person_keys(keys))) }}
    {%- else %}
    select * from {{ ref('int_prescriptions_deduplicated') }}
    {%- endif %}

),

encounters as (

    select institution_code, encounter_id, person_key from {{ ref('fct_encounter') }}

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
