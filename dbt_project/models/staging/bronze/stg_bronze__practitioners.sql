with

source as (

    select * from {{ source('bronze', 'practitioner') }} where {{ quality_gate_filter() }}

),

trimmed as (

    select
        _institution_code as institution_code,
        {{ trim_columns(['practitioner_id', 'name', 'sex_code', 'department_code', 'profession', 'title',
                         'licence_number']) }},
        {{ lineage_columns() }}
    from source

),

renamed as (

    select
        ----------  ids
        institution_code,
        practitioner_id,
        department_code,
        licence_number,

        ----------  strings
        name,
        {{ standardise_sex('sex_code') }} as sex_code,
        profession,
        title,

        ----------  lineage
        {{ lineage_columns() }}

    from trimmed

)

select * from renamed
