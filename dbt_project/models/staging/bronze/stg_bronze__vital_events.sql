with

source as (

    select * from {{ source('bronze', 'vital_event') }} where {{ quality_gate_filter() }}

),

trimmed as (

    select
        _institution_code as institution_code,
        {{ trim_columns(['event_id', 'event_type_code', 'event_at', 'name', 'sex_code', 'birth_weight_g',
                         'gestational_weeks', 'place_division_code']) }},
        {{ clean_id_number(clean_text('id_number')) }} as id_number,
        {{ clean_id_number(clean_text('mother_id_number')) }} as mother_id_number,
        {{ standardise_icd10(clean_text('death_cause_code')) }} as death_cause_code,
        {{ lineage_columns() }}
    from source

),

renamed as (

    select
        ----------  ids
        institution_code,
        event_id,
        id_number,
        mother_id_number,

        ----------  strings
        case
            when ltrim(event_type_code, '0') = '1' or event_type_code in ('出生', 'BIRTH', 'birth') then '1'
            when ltrim(event_type_code, '0') = '2' or event_type_code in ('死亡', 'DEATH', 'death') then '2'
            else upper(event_type_code)
        end as event_type_code,
        name,
        {{ standardise_sex('sex_code') }} as sex_code,
        death_cause_code,
        place_division_code,

        ----------  numerics
        {{ parse_integer('birth_weight_g') }} as birth_weight_g,
        {{ parse_integer('gestational_weeks') }} as gestational_weeks,

        ----------  booleans
        {{ gb11643_is_valid('id_number') }} as is_valid_id_number,
        {{ gb11643_is_valid('mother_id_number') }} as is_valid_mother_id_number,
        {{ is_conformant('event_at', parse_timestamp('event_at')) }} as is_valid_event_at,

        ----------  timestamps
        {{ parse_timestamp('event_at') }} as event_at,

        ----------  lineage
        {{ lineage_columns() }}

    from trimmed

)

select * from renamed
