with

source as (

    select * from {{ source('bronze', 'lab_result') }} where {{ quality_gate_filter() }}

),

trimmed as (

    select
        _institution_code as institution_code,
        {{ trim_columns(['lab_result_id', 'encounter_id', 'patient_id', 'item_code', 'item_name', 'result_value',
                         'unit', 'reference_range', 'abnormal_flag', 'reported_at']) }},
        {{ lineage_columns() }}
    from source

),

renamed as (

    select
        ----------  ids
        institution_code,
        lab_result_id,
        encounter_id,
        patient_id,

        ----------  strings
        upper(item_code) as item_code,
        item_name,
        result_value,
        unit,
        reference_range,
        {{ standardise_abnormal_flag('abnormal_flag') }} as abnormal_flag,

        ----------  numerics
        -- the numeric reading of the result when it is a plain number ('5.6', ' 5.60 ');
        -- qualitative ('阴性') and censored ('<0.5') results stay text only
        {{ parse_decimal('result_value', 18, 4) }} as result_value_numeric,

        ----------  booleans
        {{ is_conformant('reported_at', parse_timestamp('reported_at')) }} as is_valid_reported_at,

        ----------  timestamps
        {{ parse_timestamp('reported_at') }} as reported_at,

        ----------  lineage
        {{ lineage_columns() }}

    from trimmed

)

select * from renamed
