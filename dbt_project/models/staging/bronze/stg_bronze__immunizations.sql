with

source as (

    select * from {{ source('bronze', 'immunization') }} where {{ quality_gate_filter() }}

),

trimmed as (

    select
        _institution_code as institution_code,
        {{ trim_columns(['immunization_id', 'name', 'birth_date', 'vaccine_code', 'vaccine_name', 'dose_seq',
                         'vaccinated_date', 'lot_number', 'vaccinating_institution_code']) }},
        {{ clean_id_number(clean_text('id_number')) }} as id_number,
        {{ clean_id_number(clean_text('mother_id_number')) }} as mother_id_number,
        {{ lineage_columns() }}
    from source

),

renamed as (

    select
        ----------  ids
        institution_code,
        immunization_id,
        id_number,
        mother_id_number,
        vaccinating_institution_code,

        ----------  strings
        name,
        upper(vaccine_code) as vaccine_code,
        vaccine_name,
        lot_number,

        ----------  numerics
        {{ parse_integer('dose_seq') }} as dose_seq,

        ----------  booleans
        {{ gb11643_is_valid('id_number') }} as is_valid_id_number,
        {{ gb11643_is_valid('mother_id_number') }} as is_valid_mother_id_number,
        {{ is_conformant('birth_date', parse_date('birth_date')) }} as is_valid_birth_date,
        {{ is_conformant('vaccinated_date', parse_date('vaccinated_date')) }} as is_valid_vaccinated_date,
        {{ is_conformant('dose_seq', parse_integer('dose_seq')) }} as is_valid_dose_seq,

        ----------  dates
        {{ parse_date('birth_date') }} as birth_date,
        {{ parse_date('vaccinated_date') }} as vaccinated_date,

        ----------  lineage
        {{ lineage_columns() }}

    from trimmed

)

select * from renamed
