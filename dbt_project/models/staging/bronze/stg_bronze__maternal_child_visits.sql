with

source as (

    select * from {{ source('bronze', 'maternal_child_visit') }} where {{ quality_gate_filter() }}

),

trimmed as (

    select
        _institution_code as institution_code,
        {{ trim_columns(['visit_id', 'name', 'birth_date', 'service_type_code', 'visit_date', 'visit_seq',
                         'gestational_weeks', 'weight_kg', 'height_cm', 'abo_blood_type_code', 'rh_blood_type_code',
                         'practitioner_id']) }},
        {{ clean_id_number(clean_text('id_number')) }} as id_number,
        {{ lineage_columns() }}
    from source

),

renamed as (

    select
        ----------  ids
        institution_code,
        visit_id,
        id_number,
        practitioner_id,

        ----------  strings
        name,
        ltrim(service_type_code, '0') as service_type_code,
        -- WS 364 CV04.50.005 / WS 445 codes, or the text sent ('A型', '阳性')
        {{ standardise_abo('abo_blood_type_code') }} as abo_blood_type_code,
        {{ standardise_rh('rh_blood_type_code') }} as rh_blood_type_code,

        ----------  numerics
        {{ parse_integer('visit_seq') }} as visit_seq,
        {{ parse_integer('gestational_weeks') }} as gestational_weeks,
        {{ parse_decimal('weight_kg', 6, 2) }} as weight_kg,
        {{ parse_decimal('height_cm', 6, 2) }} as height_cm,

        ----------  booleans
        {{ gb11643_is_valid('id_number') }} as is_valid_id_number,
        {{ is_conformant('visit_date', parse_date('visit_date')) }} as is_valid_visit_date,

        ----------  dates
        {{ parse_date('birth_date') }} as birth_date,
        {{ parse_date('visit_date') }} as visit_date,

        ----------  lineage
        {{ lineage_columns() }}

    from trimmed

)

select * from renamed
