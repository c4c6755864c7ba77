with

source as (

    select * from {{ source('bronze', 'person') }} where {{ quality_gate_filter() }}

),

trimmed as (

    select
        _institution_code as institution_code,
        {{ trim_columns(['patient_id', 'name', 'sex_code', 'birth_date', 'id_type_code', 'ethnicity_code',
                         'marital_status_code', 'phone', 'address_division_code', 'address_text', 'updated_at']) }},
        {{ clean_id_number(clean_text('id_number')) }} as id_number,
        {{ clean_id_number(clean_text('mother_id_number')) }} as mother_id_number,
        {{ lineage_columns() }}
    from source

),

ethnicities as (

    select * from {{ ref('gb3304_ethnicity') }}

),

marital_statuses as (

    select * from {{ ref('gbt2261_2_marital_status') }}

),

renamed as (

    select
        ----------  ids
        trimmed.institution_code,
        trimmed.patient_id,
        {{ pad_code('trimmed.id_type_code', 2) }} as id_type_code,
        trimmed.id_number,
        trimmed.mother_id_number,

        ----------  strings
        trimmed.name,
        {{ standardise_sex('trimmed.sex_code') }} as sex_code,
        -- GB 3304 code ('1' → '01'), or the code of the name sent instead ('汉族', '汉')
        coalesce(ethnicity_by_name.code, {{ pad_code('trimmed.ethnicity_code', 2) }}) as ethnicity_code,
        coalesce(marital_by_name.code, {{ pad_code('trimmed.marital_status_code', 2) }}) as marital_status_code,
        trimmed.phone,
        trimmed.address_division_code,
        trimmed.address_text,

        ----------  booleans
        {{ gb11643_is_valid('trimmed.id_number') }} as is_valid_id_number,
        {{ gb11643_is_valid('trimmed.mother_id_number') }} as is_valid_mother_id_number,
        {{ is_conformant('trimmed.birth_date', parse_date('trimmed.birth_date')) }} as is_valid_birth_date,
        {{ is_conformant('trimmed.updated_at', parse_timestamp('trimmed.updated_at')) }} as is_valid_updated_at,

        ----------  dates
        {{ parse_date('trimmed.birth_date') }} as birth_date,

        ----------  timestamps
        {{ parse_timestamp('trimmed.updated_at') }} as updated_at,

        ----------  lineage
        {{ lineage_columns('trimmed') }}

    from trimmed
    left join ethnicities as ethnicity_by_name
        on ethnicity_by_name.name_zh in (trimmed.ethnicity_code, trimmed.ethnicity_code || '族')
    left join marital_statuses as marital_by_name
        on marital_by_name.name_zh = trimmed.marital_status_code

)

select * from renamed
