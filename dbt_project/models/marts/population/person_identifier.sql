-- 身份标识交叉索引：every source identity (a hospital's patient, a health archive, an immunisation
-- record) → the person it belongs to, with how the EMPI linked it and how sure it is.

with

identities as (

    select * from {{ ref('int_identities_linked') }}

),

final as (

    select
        identity_key,
        person_key,
        institution_code,
        source_dataset,
        source_id,
        id_type_code,
        id_number_sent as id_number,
        id_number as id_number_standardised,
        is_valid_id_number,
        match_method,
        match_probability,
        _batch_id,
        _ingested_at
    from identities

)

select * from final
