{{ config(materialized='incremental', unique_key='order_key', incremental_strategy='delete+insert',
          on_schema_change='append_new_columns') }}

-- 用药医嘱：one row per prescription / medication order (institution_code, order_id).
-- Incremental by a literal batch list (macros/incremental.sql, newer_than_held): a run reads only the
-- new prescription batches' rows (the latest version of each key among them replaces the row held when it
-- is later) and re-links the rows held whose person link changed (relinked_by_encounter: person_key
-- through the encounter (fct_encounter) first, then the institution's patient).
-- depends_on: {{ ref('stg_bronze__prescriptions') }}

with

orders as (

    {%- if is_incremental() %}
    select * from ({{ newer_than_held(ref('stg_bronze__prescriptions'), ['institution_code', 'order_id']) }}) as new_versions
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
{%- if is_incremental() %}

union all

{{ relinked_by_encounter(['institution_code', 'order_id'], 'orders') }}
{%- endif %}
