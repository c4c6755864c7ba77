with

source as (

    select * from {{ source('bronze', 'elderly_health_check') }} where {{ quality_gate_filter() }}

),

trimmed as (

    select
        _institution_code as institution_code,
        {{ trim_columns(['check_id', 'record_id', 'name', 'check_date', 'systolic_bp', 'diastolic_bp',
                         'fasting_glucose', 'height_cm', 'weight_kg', 'self_care_score', 'practitioner_id']) }},
        {{ clean_id_number(clean_text('id_number')) }} as id_number,
        {{ lineage_columns() }}
    from source

),

renamed as (

    select
        ----------  ids
        institution_code,
        check_id,
        record_id,
        id_number,
        practitioner_id,

        ----------  strings
        name,

        ----------  numerics
        {{ parse_integer('systolic_bp') }} as systolic_bp,
        {{ parse_integer('diastolic_bp') }} as diastolic_bp,
        {{ parse_decimal('fasting_glucose', 6, 2) }} as fasting_glucose,
        {{ parse_decimal('height_cm', 6, 2) }} as height_cm,
        {{ parse_decimal('weight_kg', 6, 2) }} as weight_kg,
        {{ parse_integer('self_care_score') }} as self_care_score,

        ----------  booleans
        {{ gb11643_is_valid('id_number') }} as is_valid_id_number,
        {{ is_conformant('check_date', parse_date('check_date')) }} as is_valid_check_date,

        ----------  dates
        {{ parse_date('check_date') }} as check_date,

        ----------  lineage
        {{ lineage_columns() }}

    from trimmed

)

select * from renamed
