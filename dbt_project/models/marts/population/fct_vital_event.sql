-- 出生与死亡：one row per birth or death certificate (institution_code, event_id). A death is
-- linked to the deceased (person_key, by the ID number on the certificate); a birth to its mother
-- (mother_person_key) — the newborn has no ID number yet and becomes a person when one is issued.
-- The underlying cause of death is ICD-10 (standardised as diagnoses are; unknown codes kept).
-- Incremental by a literal batch list against the row held (macros/incremental.sql,
-- newer_than_held), and the rows held whose deceased or mother link changed: the row keeps
-- id_number_key and mother_id_number_key, the keyed hashes of its ID numbers, to be linked again by.
-- depends_on: {{ ref('stg_bronze__vital_events') }}

{{ config(materialized='incremental', unique_key='vital_event_key', incremental_strategy='delete+insert',
          on_schema_change='append_new_columns', pre_hook="{{ load_person_key_secret() }}") }}
{%- set incremental = held_has_column('mother_id_number_key', is_incremental()) %}

with

events as (

    select *
    {%- if incremental %}
    from ({{ newer_than_held(ref('stg_bronze__vital_events'), ['institution_code', 'event_id']) }}) as new_versions
    {%- else %}
    from {{ ref('int_vital_events_deduplicated') }}
    {%- endif %}

),

persons as (

    select * from {{ ref('int_persons_by_id_number') }}

),
{%- if incremental %}

persons_by_id_number_key as (

    select {{ person_key('id_number') }} as id_number_key, person_key from persons

),
{%- endif %}

icd10_category as (

    select * from {{ ref('icd10_categories') }}

),

icd10_subcategory as (

    select * from {{ ref('icd10_subcategories') }}

),

divisions as (

    select * from {{ ref('int_divisions_resolved') }}

),

final as (

    select
        {{ hash_key(['events.institution_code', 'events.event_id']) }} as vital_event_key,
        case when events.event_type_code = '2' then deceased.person_key end as person_key,
        mothers.person_key as mother_person_key,
        {{ person_key('events.id_number') }} as id_number_key,
        {{ person_key('events.mother_id_number') }} as mother_id_number_key,
        events.institution_code,
        events.event_id,
        events.event_type_code,
        case events.event_type_code when '1' then '出生' when '2' then '死亡' end as event_type_name,
        events.event_at,
        cast(events.event_at as date) as event_date,
        events.sex_code,
        events.birth_weight_g,
        events.gestational_weeks,
        events.birth_weight_g < 2500 as is_low_birth_weight,
        events.death_cause_code,
        icd10_category.name_zh as death_cause_category_name,
        case when events.death_cause_code is not null then {{ icd10_is_known('events.death_cause_code') }} end
            as is_known_death_cause_code,
        events.place_division_code,
        divisions.current_division_code as place_current_division_code,
        events._batch_id,
        events._ingested_at
    from events
    left join persons as deceased on deceased.id_number = events.id_number
    left join persons as mothers on mothers.id_number = events.mother_id_number
    left join icd10_category on icd10_category.category_code = substr(events.death_cause_code, 1, 3)
    left join icd10_subcategory on icd10_subcategory.subcategory_code = substr(events.death_cause_code, 1, 5)
    left join divisions on divisions.division_code = events.place_division_code

)

select * from final
{%- if incremental %}
union all by name
-- the rows held, without a new version, whose deceased or mother now links to another person
select held.* replace (case when held.event_type_code = '2' then deceased.person_key end as person_key,
                      mothers.person_key as mother_person_key)
from {{ this }} as held
left join persons_by_id_number_key as deceased on deceased.id_number_key = held.id_number_key
left join persons_by_id_number_key as mothers on mothers.id_number_key = held.mother_id_number_key
where (held.person_key is distinct from case when held.event_type_code = '2' then deceased.person_key end
       or held.mother_person_key is distinct from mothers.person_key)
  and not exists (select 1 from events as new_versions
                  where new_versions.institution_code = held.institution_code and new_versions.event_id = held.event_id)
{%- endif %}
