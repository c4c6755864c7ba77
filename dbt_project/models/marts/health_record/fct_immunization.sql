{{ config(materialized='incremental', unique_key='immunization_key', incremental_strategy='delete+insert',
          on_schema_change='append_new_columns') }}

-- 预防接种：one row per vaccination record (institution_code, immunization_id).
-- Incremental by a literal batch list (macros/incremental.sql, newer_than_held): a run reads only the
-- new immunization batches' rows (the latest version of each key among them replaces the row held when it
-- is later) and re-links the rows held whose person link changed (relinked_held).
-- depends_on: {{ ref('stg_bronze__immunizations') }}

with

immunizations as (

    {%- if is_incremental() %}
    select * from ({{ newer_than_held(ref('stg_bronze__immunizations'), ['institution_code', 'immunization_id']) }}) as new_versions
    {%- else %}
    select * from {{ ref('int_immunizations_deduplicated') }}
    {%- endif %}

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
    {%- if is_incremental() %}

    union all

    {{ relinked_held(['institution_code', 'immunization_id'], 'immunizations', 'identities.person_key',
        'left join identities on identities.institution_code = held.institution_code and identities.source_id = held.immunization_id') }}
    {%- endif %}

)

select * from final
