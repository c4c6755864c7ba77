{#- person_timeline's events: one branch per source fact (health_record/person_timeline.sql).
    timeline_events(): every event with a person and a time, without its number (event_seq);
    timeline_columns: the columns that make an event what it is (compared between runs). -#}

{% macro timeline_branches() -%}
{%- set branches = [
    {'ref': 'fct_encounter', 'key': 'encounter_key', 'at': 'visit_at', 'institution': 'institution_code',
     'type': "case visit_type_code when '1' then 'outpatient_visit' when '2' then 'emergency_visit' when '3' then 'admission' else 'visit' end",
     'name': "coalesce(visit_type_name, '就诊') || case when visit_type_code = '3' then '入院' else '' end",
     'detail': "primary_diagnosis_code", 'order': 20},
    {'ref': 'fct_encounter', 'key': 'encounter_key', 'at': 'discharge_at', 'institution': 'institution_code',
     'type': "'discharge'", 'name': "'出院'",
     'detail': "cast(length_of_stay_days as varchar) || '天'", 'order': 80,
     'where': "visit_type_code = '3' and discharge_at is not null"},
    {'ref': 'dim_health_record', 'key': 'record_key', 'at': 'cast(created_date as timestamp)',
     'institution': 'managing_institution_code', 'type': "'health_record_created'", 'name': "'建立健康档案'",
     'detail': "record_id", 'order': 10},
    {'ref': 'fct_chronic_followup', 'key': 'followup_key', 'at': 'cast(followup_date as timestamp)',
     'institution': 'institution_code', 'type': "'chronic_followup'", 'name': "disease_type_name || '随访'",
     'detail': "case when is_controlled then '控制满意' when not is_controlled then '控制不满意' end", 'order': 30},
    {'ref': 'fct_immunization', 'key': 'immunization_key', 'at': 'cast(vaccinated_date as timestamp)',
     'institution': 'institution_code', 'type': "'immunization'", 'name': "'预防接种'",
     'detail': "vaccine_name || ' 第' || cast(dose_seq as varchar) || '剂'", 'order': 30},
    {'ref': 'fct_maternal_child_visit', 'key': 'maternal_child_visit_key', 'at': 'cast(visit_date as timestamp)',
     'institution': 'institution_code', 'type': "'maternal_child_visit'", 'name': "service_type_name",
     'detail': "'第' || cast(visit_seq as varchar) || '次'", 'order': 30},
    {'ref': 'fct_elderly_health_check', 'key': 'elderly_check_key', 'at': 'cast(check_date as timestamp)',
     'institution': 'institution_code', 'type': "'elderly_health_check'", 'name': "'老年人健康体检'",
     'detail': "self_care_level", 'order': 30},
    {'ref': 'fct_procedure', 'key': 'procedure_key', 'at': 'procedure_at',
     'institution': 'institution_code', 'type': "'procedure'", 'name': "'手术操作'",
     'detail': "coalesce(standard_procedure_name, procedure_name, procedure_code)", 'order': 40},
    {'ref': 'fct_imaging_study', 'key': 'imaging_study_key', 'at': 'study_at',
     'institution': 'institution_code', 'type': "'imaging_study'", 'name': "'影像检查'",
     'detail': "modalities || coalesce(' ' || body_parts, '')", 'order': 40},
    {'ref': 'fct_exam_report', 'key': 'exam_report_key', 'at': 'reported_at',
     'institution': 'institution_code', 'type': "'exam_report'", 'name': "exam_category || '检查报告'",
     'detail': "exam_item_name || '：' || coalesce(conclusion, '')", 'order': 40},
    {'ref': 'fct_vital_event', 'key': 'vital_event_key', 'at': 'event_at', 'person': 'mother_person_key',
     'institution': 'institution_code', 'type': "'birth'", 'name': "'分娩（新生儿出生）'",
     'detail': "cast(birth_weight_g as varchar) || 'g'", 'order': 0, 'where': "event_type_code = '1'"},
    {'ref': 'fct_vital_event', 'key': 'vital_event_key', 'at': 'event_at',
     'institution': 'institution_code', 'type': "'death'", 'name': "'死亡'",
     'detail': "death_cause_code", 'order': 99, 'where': "event_type_code = '2'"},
] %}
{{ return(branches) }}
{%- endmacro %}


{% macro timeline_columns() -%}
    timeline_event_key, person_key, event_at, event_date, event_type, event_name, institution_code,
    source_model, source_key, event_detail
{%- endmacro %}


{% macro timeline_events() -%}
{%- set branches = timeline_branches() %}
select
    {{ hash_key(['source_model', 'source_key', 'event_type']) }} as timeline_event_key,
    person_key,
    event_at,
    cast(event_at as date) as event_date,
    event_type,
    event_name,
    event_type_order,
    institution_code,
    source_model,
    source_key,
    event_detail
from (
    {%- for b in branches %}
    select
        {{ b.person or 'person_key' }} as person_key,
        {{ b.at }} as event_at,
        {{ b.type }} as event_type,
        {{ b.name }} as event_name,
        {{ b.order }} as event_type_order,
        {{ b.institution }} as institution_code,
        '{{ b.ref }}' as source_model,
        {{ b.key }} as source_key,
        {{ b.detail }} as event_detail
    from {{ ref(b.ref) }}
    where {{ b.person or 'person_key' }} is not null
      and {{ b.at }} is not null
      {%- if b.where %} and {{ b.where }}{% endif %}
    {{ 'union all' if not loop.last }}
    {%- endfor %}
) as unioned
{%- endmacro %}


{#- Incremental runs (pre-hook): every event computed once into a temporary table; the persons of
    whom the timeline holds an event that is no longer there as it was (removed, changed, moved to
    another person) or lacks an event there is (new, changed) are the changed persons; their rows
    are deleted, and the model numbers all their events again from the temporary tables. -#}
{% macro timeline_drop_changed_persons() -%}
    {%- if is_incremental() -%}
    create or replace temporary table __timeline_events as {{ timeline_events() }};
    create or replace temporary table __timeline_changed_persons as
    select distinct person_key from (
        (select {{ timeline_columns() }} from {{ this }}
         except
         select {{ timeline_columns() }} from __timeline_events)
        union all
        (select {{ timeline_columns() }} from __timeline_events
         except
         select {{ timeline_columns() }} from {{ this }})
    );
    delete from {{ this }} where person_key in (select person_key from __timeline_changed_persons)
    {%- else -%}
    select 1
    {%- endif -%}
{%- endmacro %}
