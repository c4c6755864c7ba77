{{ config(materialized='incremental', unique_key='practitioner_key', incremental_strategy='delete+insert',
          on_schema_change='append_new_columns') }}

-- 卫生技术人员：one row per practitioner of an institution (institution_code, practitioner_id).
-- Incremental by a literal batch list (macros/incremental.sql, newer_than_held): a run reads only the
-- new practitioner batches' rows (the latest version of each key among them replaces the row held when it
-- is later); nothing else of it depends on another model.
-- depends_on: {{ ref('stg_bronze__practitioners') }}

with

practitioners as (

    {%- if is_incremental() %}
    select * from ({{ newer_than_held(ref('stg_bronze__practitioners'), ['institution_code', 'practitioner_id']) }}) as new_versions
    {%- else %}
    select * from {{ ref('int_practitioners_deduplicated') }}
    {%- endif %}

),

final as (

    select
        {{ hash_key(['institution_code', 'practitioner_id']) }} as practitioner_key,
        {{ hash_key(['institution_code', 'department_code']) }} as department_key,
        institution_code,
        practitioner_id,
        department_code,
        name,
        sex_code,
        profession,
        title,
        licence_number,
        _batch_id,
        _ingested_at
    from practitioners

)

select * from final
