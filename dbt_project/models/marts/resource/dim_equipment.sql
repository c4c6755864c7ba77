{{ config(materialized='incremental', unique_key='equipment_key', incremental_strategy='delete+insert',
          on_schema_change='append_new_columns') }}

-- 医用设备：one row per piece of major medical equipment of an institution
-- (institution_code, equipment_id), the latest version of the institution's equipment register.
-- Incremental by a literal batch list (macros/incremental.sql, newer_than_held): a run reads only the
-- new equipment batches' rows (the latest version of each key among them replaces the row held when
-- it is later); nothing else of it depends on another model.
-- depends_on: {{ ref('stg_bronze__equipment') }}

with

equipment as (

    {%- if is_incremental() %}
    select * from ({{ newer_than_held(ref('stg_bronze__equipment'), ['institution_code', 'equipment_id']) }}) as new_versions
    {%- else %}
    select * from {{ ref('int_equipment_deduplicated') }}
    {%- endif %}

),

final as (

    select
        {{ hash_key(['institution_code', 'equipment_id']) }} as equipment_key,
        {{ hash_key(['institution_code', 'department_code']) }} as department_key,
        institution_code,
        equipment_id,
        equipment_name,
        equipment_type,
        case equipment_type
            when 'CT' then 'X射线计算机体层摄影设备' when 'MR' then '磁共振成像设备'
            when 'DR' then '数字化X射线摄影系统' when 'US' then '超声诊断设备'
            when 'DSA' then '数字减影血管造影系统' when 'PET-CT' then '正电子发射及X射线计算机断层成像扫描系统'
            when 'LINAC' then '医用直线加速器'
        end as equipment_type_name,
        -- 大型医用设备 (配置许可管理): CT, MR, DSA, PET-CT, linear accelerators
        coalesce(equipment_type in ('CT', 'MR', 'DSA', 'PET-CT', 'LINAC'), false) as is_large_equipment,
        manufacturer,
        model,
        department_code,
        purchase_date,
        status,
        coalesce(status = '在用', false) as is_in_use,
        _batch_id,
        _ingested_at
    from equipment

)

select * from final
