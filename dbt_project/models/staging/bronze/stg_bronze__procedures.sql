with

source as (

    select * from {{ source('bronze', 'procedure') }} where {{ quality_gate_filter() }}

),

trimmed as (

    select
        _institution_code as institution_code,
        {{ trim_columns(['procedure_id', 'encounter_id', 'patient_id', 'procedure_seq', 'procedure_name',
                         'procedure_at', 'procedure_end_at', 'procedure_level_code', 'anaesthesia_method_code',
                         'operator_id', 'department_code']) }},
        {{ standardise_icd9cm3(clean_text('procedure_code')) }} as procedure_code,
        {{ lineage_columns() }}
    from source

),

renamed as (

    select
        ----------  ids
        institution_code,
        procedure_id,
        encounter_id,
        patient_id,
        operator_id,
        department_code,

        ----------  strings
        procedure_code,
        procedure_name,
        procedure_level_code,
        anaesthesia_method_code,

        ----------  numerics
        {{ parse_integer('procedure_seq') }} as procedure_seq,

        ----------  booleans
        coalesce(regexp_full_match(procedure_code, '[0-9]{2}(\.[0-9]{1,4})?[A-Z]?'), false) as is_valid_procedure_code,
        {{ is_conformant('procedure_at', parse_timestamp('procedure_at')) }} as is_valid_procedure_at,

        ----------  timestamps
        {{ parse_timestamp('procedure_at') }} as procedure_at,
        {{ parse_timestamp('procedure_end_at') }} as procedure_end_at,

        ----------  lineage
        {{ lineage_columns() }}

    from trimmed

)

select * from renamed
