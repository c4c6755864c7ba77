with

source as (

    select * from {{ source('bronze', 'department') }} where {{ quality_gate_filter() }}

),

trimmed as (

    select
        _institution_code as institution_code,
        {{ trim_columns(['department_code', 'department_name', 'department_kind', 'approved_beds', 'open_beds']) }},
        {{ lineage_columns() }}
    from source

),

renamed as (

    select
        ----------  ids
        institution_code,
        department_code,

        ----------  strings
        department_name,
        department_kind,

        ----------  numerics
        {{ parse_integer('approved_beds') }} as approved_beds,
        {{ parse_integer('open_beds') }} as open_beds,

        ----------  booleans
        {{ is_conformant('approved_beds', parse_integer('approved_beds')) }} as is_valid_approved_beds,
        {{ is_conformant('open_beds', parse_integer('open_beds')) }} as is_valid_open_beds,

        ----------  lineage
        {{ lineage_columns() }}

    from trimmed

)

select * from renamed
