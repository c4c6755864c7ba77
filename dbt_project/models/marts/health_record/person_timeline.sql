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
-- Incremental: a run rewrites only the persons whose events changed (macros/timeline.sql: the
-- pre-hook computes every event once, finds the persons with an event no longer held as it was or
-- not held as it is, and deletes their rows; their events are numbered again here).

with

{%- if is_incremental() %}

events as (

    select * from __timeline_events
    where person_key in (select person_key from __timeline_changed_persons)

),
{%- else %}

events as (

    {{ timeline_events() }}

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

)

select * from final
