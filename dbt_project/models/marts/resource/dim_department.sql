-- 科室：one row per department of an institution (institution_code, department_code), with beds.

with

departments as (

    select * from {{ ref('int_departments_deduplicated') }}

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
