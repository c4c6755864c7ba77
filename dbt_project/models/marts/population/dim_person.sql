{{ config(materialized='incremental', unique_key='person_key', incremental_strategy='delete+insert',
          on_schema_change='append_new_columns',
          post_hook="{% if is_incremental() %}delete from {{ this }} where person_key not in
                     (select person_key from {{ ref('int_identities_linked') }} where person_key is not null){% endif %}") }}

-- 全员人口：one golden record per person (person_key from the EMPI, int_identities_linked). Each
-- attribute is taken from the most recent identity that has it (ingested last; then the source's own
-- update time; then person > health_record > immunization), so a newer record without a phone
-- number does not erase the phone number an older one had. The name prefers a Hanzi form over a
-- pinyin-only one. The ID number is the standardised one of identities linked on it.
-- Incremental: a run rebuilds the persons whose identities changed — an identity new, re-sent (new
-- batch) or re-linked, its old and its new person — found by comparing int_identities_linked with
-- population.person_identifier, which still holds the previous run's identities (it is built
-- after this model); persons left without identities are deleted (post_hook). A run that builds
-- person_identifier without this model leaves it behind until the next full refresh.
{%- if is_incremental() %}
{%- set previous = adapter.get_relation(this.database, 'population', 'person_identifier') %}
{%- endif %}

with

{%- if is_incremental() and previous is not none %}

-- identities as this run links them and as the previous run did: the persons of any difference
current_links as (

    select identity_key, person_key, _batch_id, _ingested_at, id_number
    from {{ ref('int_identities_linked') }}

),

previous_links as (

    select identity_key, person_key, _batch_id, _ingested_at, id_number_standardised as id_number
    from {{ previous }}

),

touched_persons as (

    select person_key from (select * from current_links except select * from previous_links)
    union
    select person_key from (select * from previous_links except select * from current_links)

),
{%- endif %}

identities as (

    select * from {{ ref('int_identities_linked') }}
    where person_key is not null
    {%- if is_incremental() and previous is not none %}
      and person_key in (select person_key from touched_persons)
    {%- endif %}

),

sexes as (

    select * from {{ ref('gbt2261_1_sex') }}

),

divisions as (

    select * from {{ ref('gbt2260_divisions_sichuan') }}

),

ranked as (

    select
        *,
        row_number() over (
            partition by person_key
            order by _ingested_at desc, source_updated_at desc nulls last, dataset_priority,
                     institution_code, source_id
        ) as recency_rank
    from identities

),

persons as (

    select
        person_key,
        arg_min(id_number, recency_rank) filter (where id_number is not null) as id_number,
        coalesce(arg_min(name, recency_rank) filter (where regexp_matches(name, '\p{Han}')),
                 arg_min(name, recency_rank) filter (where name is not null)) as name,
        arg_min(sex_code, recency_rank) filter (where sex_code is not null) as sex_code,
        arg_min(birth_date, recency_rank) filter (where birth_date is not null) as birth_date,
        arg_min(ethnicity_code, recency_rank) filter (where ethnicity_code is not null) as ethnicity_code,
        arg_min(address_division_code, recency_rank) filter (where address_division_code is not null)
            as current_division_code,
        arg_min(phone, recency_rank) filter (where phone is not null) as phone,
        count(*) as source_count,
        count(distinct institution_code) as institution_count,
        min(_ingested_at) as first_seen_at,
        max(_ingested_at) as last_seen_at
    from ranked
    group by person_key

),

final as (

    select
        persons.person_key,
        persons.id_number,
        persons.name,
        persons.sex_code,
        sexes.name_zh as sex_name,
        persons.birth_date,
        persons.ethnicity_code,
        persons.current_division_code,
        divisions.division_name as current_division_name,
        persons.phone,
        cast(persons.source_count as integer) as source_count,
        cast(persons.institution_count as integer) as institution_count,
        persons.first_seen_at,
        persons.last_seen_at
    from persons
    left join sexes on sexes.code = persons.sex_code
    left join divisions on divisions.division_code = persons.current_division_code

)

select * from final
