with

source as (

    select * from {{ source('bronze', 'chronic_followup') }} where {{ quality_gate_filter() }}

),

trimmed as (

    select
        _institution_code as institution_code,
        {{ trim_columns(['followup_id', 'record_id', 'followup_date', 'systolic_bp', 'diastolic_bp',
                         'fasting_glucose', 'practitioner_id']) }},
        {{ clean_id_number(clean_text('id_number')) }} as id_number,
        {{ standardise_icd10(clean_text('disease_code')) }} as disease_code,
        {{ lineage_columns() }}
    from source

),

renamed as (

    select
        ----------  ids
        institution_code,
        followup_id,
        record_id,
        id_number,
        practitioner_id,

        ----------  strings
        disease_code,

        ----------  numerics
        {{ parse_integer('systolic_bp') }} as systolic_bp,
        {{ parse_integer('diastolic_bp') }} as diastolic_bp,
        {{ parse_decimal('fasting_glucose', 6, 2) }} as fasting_glucose,

        ----------  booleans
        {{ gb11643_is_valid('id_number') }} as is_valid_id_number,
        {{ is_conformant('followup_date', parse_date('followup_date')) }} as is_valid_followup_date,
        {{ is_conformant('systolic_bp', parse_integer('systolic_bp')) }} as is_valid_systolic_bp,
        {{ is_conformant('diastolic_bp', parse_integer('diastolic_bp')) }} as is_valid_diastolic_bp,
        {{ is_conformant('fasting_glucose', parse_decimal('fasting_glucose', 6, 2)) }} as is_valid_fasting_glucose,

        ----------  dates
        {{ parse_date('followup_date') }} as followup_date,

        ----------  lineage
        {{ lineage_columns() }}

    from trimmed

)

select * from renamed
