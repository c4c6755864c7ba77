{{ config(materialized='incremental', unique_key='department_key', incremental_strategy='delete+insert',
          on_schema_change='append_new_columns') }}

-- 科室：one row per department of an institution (institution_code, department_code), with beds.
-- Incremental by a literal batch list (macros/incremental.sql, newer_than_held): a run reads only the
-- new department batches' rows (the latest version of each key among them replaces the row held when it
-- is later); nothing else of it depends on another model.
-- depends_on: {{ ref('stg_bronze__departments') }}

with

departments as (

    {%- if is_incremental() %}
    select * from ({{ newer_than_held(ref('stg_bronze__departments'), ['institution_code', 'department_code']) }}) as new_versions
    {%- else %}
    select * from {{ ref('int_departments_deduplicated') }}
    {%- endif %}

),

final as (

    select
        {{ hash_key(['institution_code', 'department_code']) }} as department_key,
        institution_code,
        department_code,
        department_name,
        department_kind,
        approved_beds,
        open_beds,
        _batch_id,
        _ingested_at
    from departments

)

select * from final
