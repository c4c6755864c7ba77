{#- Encounters with the person they belong to (the logic of int_encounters_linked, shared with the
    incremental path of fct_encounter): encounters_sql selects deduplicated encounters. -#}
{% macro link_encounters(encounters_sql) -%}
with

encounters as (

    {{ encounters_sql }}

),

identities as (

    select * from {{ ref('int_identities_linked') }}
    where person_key is not null

),

persons_by_id_number as (

    -- one person per ID number (the EMPI may one day disagree with itself: take one, stably)
    select id_number, min(person_key) as person_key
    from identities
    group by id_number

),

persons_by_patient_id as (

    select * from {{ ref('int_patients_linked') }}

),

linked as (

    select
        encounters.*,
        coalesce(by_id_number.person_key, by_patient_id.person_key) as person_key,
        case
            when by_id_number.person_key is not null then 'id_number'
            when by_patient_id.person_key is not null then 'patient_id'
        end as person_link_method
    from encounters
    -- persons_by_id_number holds valid ID numbers only, so an invalid one cannot match (a plain
    -- equality keeps this a hash join: `is_valid and …` made DuckDB loop over every pair)
    left join persons_by_id_number as by_id_number
        on by_id_number.id_number = encounters.id_number
    left join persons_by_patient_id as by_patient_id
        on by_patient_id.institution_code = encounters.institution_code
        and by_patient_id.patient_id = encounters.patient_id

)

select * from linked
{%- endmacro %}
