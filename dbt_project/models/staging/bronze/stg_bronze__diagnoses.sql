with

source as (

    select * from {{ source('bronze', 'diagnosis') }} where {{ quality_gate_filter() }}

),

trimmed as (

    select
        _institution_code as institution_code,
        {{ trim_columns(['diagnosis_id', 'encounter_id', 'patient_id', 'diagnosis_seq', 'diagnosis_name',
                         'diagnosed_at']) }},
        {{ standardise_icd10(clean_text('diagnosis_code')) }} as diagnosis_code,
        {{ lineage_columns() }}
    from source

),

renamed as (

    select
        ----------  ids
        institution_code,
        diagnosis_id,
        encounter_id,
        patient_id,

        ----------  strings
        diagnosis_code,
        diagnosis_name,

        ----------  numerics
        {{ parse_integer('diagnosis_seq') }} as diagnosis_seq,

        ----------  booleans
        {{ is_icd10_shaped('diagnosis_code') }} as is_valid_diagnosis_code,
        {{ is_conformant('diagnosis_seq', parse_integer('diagnosis_seq')) }} as is_valid_diagnosis_seq,
        {{ is_conformant('diagnosed_at', parse_timestamp('diagnosed_at')) }} as is_valid_diagnosed_at,

        ----------  timestamps
        {{ parse_timestamp('diagnosed_at') }} as diagnosed_at,

        ----------  lineage
        {{ lineage_columns() }}

    from trimmed

)

select * from renamed
