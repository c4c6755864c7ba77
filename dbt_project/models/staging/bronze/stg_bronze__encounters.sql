with

source as (

    select * from {{ source('bronze', 'encounter') }} where {{ quality_gate_filter() }}

),

trimmed as (

    select
        _institution_code as institution_code,
        {{ trim_columns(['encounter_id', 'patient_id', 'visit_type_code', 'department_code', 'practitioner_id',
                         'visit_at', 'discharge_at', 'payment_method_code', 'total_fee']) }},
        {{ clean_id_number(clean_text('id_number')) }} as id_number,
        {{ lineage_columns() }}
    from source

),

renamed as (

    select
        ----------  ids
        institution_code,
        encounter_id,
        patient_id,
        id_number,
        department_code,
        practitioner_id,

        ----------  strings
        {{ standardise_visit_type('visit_type_code') }} as visit_type_code,
        {{ pad_code('payment_method_code', 2) }} as payment_method_code,

        ----------  numerics
        {{ parse_decimal('total_fee', 18, 2) }} as total_fee,

        ----------  booleans
        {{ gb11643_is_valid('id_number') }} as is_valid_id_number,
        {{ is_conformant('visit_at', parse_timestamp('visit_at')) }} as is_valid_visit_at,
        {{ is_conformant('discharge_at', parse_timestamp('discharge_at')) }} as is_valid_discharge_at,
        {{ is_conformant('total_fee', parse_decimal('total_fee', 18, 2)) }} as is_valid_total_fee,

        ----------  timestamps
        {{ parse_timestamp('visit_at') }} as visit_at,
        {{ parse_timestamp('discharge_at') }} as discharge_at,

        ----------  lineage
        {{ lineage_columns() }}

    from trimmed

)

select * from renamed
