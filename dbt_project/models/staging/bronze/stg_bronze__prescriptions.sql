with

source as (

    select * from {{ source('bronze', 'prescription') }} where {{ quality_gate_filter() }}

),

trimmed as (

    select
        _institution_code as institution_code,
        {{ trim_columns(['order_id', 'encounter_id', 'patient_id', 'drug_code', 'drug_name', 'dose', 'dose_unit',
                         'frequency', 'days', 'ordered_at']) }},
        {{ lineage_columns() }}
    from source

),

renamed as (

    select
        ----------  ids
        institution_code,
        order_id,
        encounter_id,
        patient_id,
        upper(drug_code) as drug_code,

        ----------  strings
        drug_name,
        dose_unit,
        frequency,

        ----------  numerics
        {{ parse_decimal('dose', 18, 4) }} as dose,
        {{ parse_integer('days') }} as days,

        ----------  booleans
        {{ is_conformant('dose', parse_decimal('dose', 18, 4)) }} as is_valid_dose,
        {{ is_conformant('days', parse_integer('days')) }} as is_valid_days,
        {{ is_conformant('ordered_at', parse_timestamp('ordered_at')) }} as is_valid_ordered_at,

        ----------  timestamps
        {{ parse_timestamp('ordered_at') }} as ordered_at,

        ----------  lineage
        {{ lineage_columns() }}

    from trimmed

)

select * from renamed
