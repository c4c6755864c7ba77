{{ config(materialized='incremental', unique_key='record_key', incremental_strategy='delete+insert',
          on_schema_change='append_new_columns') }}

-- 居民健康档案：one row per resident health archive (institution_code, record_id), the latest
-- version the managing institution sent.
-- Incremental by a literal batch list (macros/incremental.sql): a run reads only the new
-- health_record batches' rows (the latest version of each archive among them replaces the one held
-- when it is later) and re-links the archives whose person link changed (the EMPI merged, split or
-- newly linked their identity). A change of the division code tables needs a full refresh.
-- depends_on: {{ ref('stg_bronze__health_records') }}

{%- if is_incremental() %}
{%- set batches = new_batch_literals(ref('stg_bronze__health_records'), 'select _batch_id from ' ~ this) %}
{%- endif %}

with

health_records as (

    {%- if is_incremental() %}
    select new_versions.*
    from ({{ latest_of_batches(ref('stg_bronze__health_records'), ['institution_code', 'record_id'], batches) }}) as new_versions
    left join {{ this }} as held
        on held.managing_institution_code = new_versions.institution_code
        and held.record_id = new_versions.record_id
    where {{ newer_than('new_versions', 'held', with_source_row=false) }}
    {%- else %}
    select * from {{ ref('int_health_records_deduplicated') }}
    {%- endif %}

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

    {%- if is_incremental() %}

    union all

    -- archives held whose person link changed, and no new version
    select held.* replace (identities.person_key as person_key)
    from {{ this }} as held
    left join identities
        on identities.institution_code = held.managing_institution_code
        and identities.source_id = held.record_id
    where held.person_key is distinct from identities.person_key
      and not exists (select 1 from health_records
                      where health_records.institution_code = held.managing_institution_code
                        and health_records.record_id = held.record_id)
    {%- endif %}

)

select * from final
