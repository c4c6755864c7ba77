with

source as (

    select * from {{ source('bronze', 'equipment') }} where {{ quality_gate_filter() }}

),

trimmed as (

    select
        _institution_code as institution_code,
        {{ trim_columns(['equipment_id', 'equipment_name', 'equipment_type', 'manufacturer', 'model',
                         'department_code', 'purchase_date', 'status']) }},
        {{ lineage_columns() }}
    from source

),

renamed as (

    select
        ----------  ids
        institution_code,
        equipment_id,
        department_code,

        ----------  strings
        equipment_name,
        upper(equipment_type) as equipment_type,
        manufacturer,
        model,
        status,

        ----------  booleans
        {{ is_conformant('purchase_date', parse_date('purchase_date')) }} as is_valid_purchase_date,

        ----------  dates
        {{ parse_date('purchase_date') }} as purchase_date,

        ----------  lineage
        {{ lineage_columns() }}

    from trimmed

)

select * from renamed
