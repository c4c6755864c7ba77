-- 全员人口：one golden record per person (person_key from the EMPI, int_identities_linked). Each
-- attribute is taken from the most recent identity that has it (ingested last; then the source's own
-- update time; then person > health_record > immunization), so a newer record without a phone
-- number does not erase the phone number an older one had. The name prefers a Hanzi form over a
-- pinyin-only one. The ID number is the standardised one of identities linked on it.

with

identities as (

    select * from {{ ref('int_identities_linked') }}
    where person_key is not null

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
