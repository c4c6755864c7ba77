-- 卫生技术人员：one row per practitioner of an institution (institution_code, practitioner_id).

with

practitioners as (

    select * from {{ ref('int_practitioners_deduplicated') }}

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
