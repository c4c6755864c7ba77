{{ config(materialized='incremental', unique_key='person_key', incremental_strategy='delete+insert',
          on_schema_change='append_new_columns', pre_hook="{{ timeline_drop_changed_persons() }}") }}

-- 全生命周期时间轴：every event of a person across all institutions, one row per event, numbered in
-- the order it happened (event_seq 1 = earliest). Events: visits and admissions (with their
-- principal diagnosis), discharges, the health archive's creation, chronic-disease follow-ups,
-- vaccinations, maternal-child visits, elderly health checks, procedures, exam reports, births and
-- deaths (a birth is on its mother's timeline: the newborn has no person_key yet). Lab results and medication orders belong to their visit and are not repeated here.
-- Only events linked to a person (person_key) are on a timeline.
-- Order: event time; events known by their date only sort before the timed events of that day
-- (a date is read as 00:00); on the same instant by event kind (birth first, death last), then
-- institution and source key, so the order is total and stable across runs.
-- Incremental: a run rewrites only the persons whose events changed (macros/timeline.sql: a
-- pre-hook drops the persons with an event no longer there as held; the persons with an event not
-- held as it is are rebuilt, every event of theirs numbered again; delete+insert on person_key).

with

events as (

    {{ timeline_events() }}

),

{%- if is_incremental() %}

changed_persons as (

    select distinct person_key from (
        select {{ timeline_columns() }} from events
        except
        select {{ timeline_columns() }} from {{ this }}
    )

),
{%- endif %}

final as (

    select
        timeline_event_key,
        person_key,
        cast(row_number() over (
            partition by person_key
            order by event_at, event_type_order, institution_code, source_key
        ) as integer) as event_seq,
        event_at,
        event_date,
        event_type,
        event_name,
        institution_code,
        source_model,
        source_key,
        event_detail
    from events
    {%- if is_incremental() %}
    where person_key in (select person_key from changed_persons)
    {%- endif %}

)

select * from final
