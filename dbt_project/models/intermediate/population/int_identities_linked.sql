{{ config(materialized='table', pre_hook="{{ load_person_key_secret() }}") }}

-- Every source identity with the person it belongs to: one row per identity_key.
--
-- Deterministic linkage until the EMPI lands: identities are linked on a VALID GB 11643 ID number
-- only (match_method 'valid_id_number', probability 1.0); everything else stays unlinked
-- (person_key null). The EMPI replaces this model with probabilistic matching on name, sex, birth
-- date, phone and address; every mart reads person keys from here, so nothing else changes.

with

identities as (

    select * from {{ ref('int_identities_unioned') }}

),

linked as (

    select
        identities.*,
        case when is_valid_id_number then {{ person_key('id_number') }} end as person_key,
        case when is_valid_id_number then 'valid_id_number' else 'unlinked' end as match_method,
        case when is_valid_id_number then 1.0 end :: double as match_probability
    from identities

)

select * from linked
