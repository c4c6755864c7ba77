{{ config(materialized='incremental', unique_key='identity_key', incremental_strategy='delete+insert',
          on_schema_change='append_new_columns',
          post_hook="{% if is_incremental() %}delete from {{ this }} where identity_key not in
                     (select identity_key from {{ ref('int_identities_linked') }}){% endif %}") }}

-- 身份标识交叉索引：every source identity (a hospital's patient, a health archive, an immunisation
-- record) → the person it belongs to, with how the EMPI linked it and how sure it is.
-- Incremental: a run writes only the identities whose row changed (new, re-sent, re-linked) and
-- deletes those the EMPI no longer has (post_hook); the rest of the 224k-row table (100k city) is
-- left alone instead of rewritten. Built after dim_person, which compares it with the identities
-- of this run to find the persons to rebuild.
-- depends_on: {{ ref('dim_person') }}

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
{%- if is_incremental() %}
except
select * from {{ this }}
{%- endif %}
