with

source as (

    select * from {{ source('bronze', 'health_record') }} where {{ quality_gate_filter() }}

),

trimmed as (

    select
        _institution_code as institution_code,
        {{ trim_columns(['record_id', 'name', 'sex_code', 'birth_date', 'phone', 'household_id',
                         'address_division_code', 'address_text', 'created_date', 'family_doctor_id']) }},
        {{ clean_id_number(clean_text('id_number')) }} as id_number,
        {{ clean_id_number(clean_text('mother_id_number')) }} as mother_id_number,
        {{ lineage_columns() }}
    from source

),

renamed as (

    select
        ----------  ids
        institution_code,
        record_id,
        id_number,
        mother_id_number,
        household_id,
        family_doctor_id,

        ----------  strings
        name,
        {{ standardise_sex('sex_code') }} as sex_code,
        phone,
        address_division_code,
        address_text,

        ----------  booleans
        {{ gb11643_is_valid('id_number') }} as is_valid_id_number,
        {{ gb11643_is_valid('mother_id_number') }} as is_valid_mother_id_number,
        {{ is_conformant('birth_date', parse_date('birth_date')) }} as is_valid_birth_date,
        {{ is_conformant('created_date', parse_date('created_date')) }} as is_valid_created_date,

        ----------  dates
        {{ parse_date('birth_date') }} as birth_date,
        {{ parse_date('created_date') }} as created_date,

        ----------  lineage
        {{ lineage_columns() }}

    from trimmed

)

select * from renamed
