-- 规划指标值：one row per indicator, scope (institution 机构 / district 区县 / city 全市), unit and
-- month: numerator, denominator and value = numerator ÷ denominator. The definitions (Chinese
-- name, numerator, denominator, formula, window, source, target) are indicators.dim_indicator
-- (seed indicator_definitions). Months: the 12 calendar months up to the month of the last loaded
-- batch. Rows with a zero denominator are left out (the indicator does not apply there).
-- Institution-based indicators are counted per institution and summed to district (the
-- institution's division) and city; population-based ones are counted per person and summed by
-- the person's current district (retired division codes resolved).

with

months as (

    select
        cast(m as date) as period_month,
        cast(m + interval 1 month - interval 1 day as date) as month_end
    from (
        select cast(date_trunc('month', max(finished_at)) as timestamp) as last_month
        from {{ ref('stg_ops__ingest_batches') }}
        where is_loaded
    ) as bounds,
    generate_series(bounds.last_month - interval 11 month, bounds.last_month, interval 1 month) as t(m)

),

institutions as (

    select institution_code, division_code, feed_count, first_data_received_at
    from {{ ref('dim_institution') }}

),

persons as (

    select
        persons.person_key,
        persons.birth_date,
        coalesce(divisions.current_division_code, persons.current_division_code) as division_code
    from {{ ref('dim_person') }} as persons
    left join {{ ref('int_divisions_resolved') }} as divisions
        on divisions.division_code = persons.current_division_code

),

---------------------------------------------------------------- institution-based
connected as (   -- IND01

    select 'IND01' as indicator_code, i.institution_code, m.period_month,
           cast(coalesce(cast(i.first_data_received_at as date) <= m.month_end, false) as integer) as numerator,
           1 as denominator
    from institutions as i cross join months as m

),

feed_coverage as (   -- IND02

    select 'IND02' as indicator_code, i.institution_code, m.period_month,
           (select count(distinct b.feed) from {{ ref('stg_ops__ingest_batches') }} as b
            where b.is_loaded and b.institution_code = i.institution_code
              and cast(b.finished_at as date) <= m.month_end) as numerator,
           coalesce(i.feed_count, 0) as denominator
    from institutions as i cross join months as m

),

followups_in_window as (

    select f.*, m.period_month
    from {{ ref('fct_chronic_followup') }} as f
    join months as m
        on f.followup_date > m.month_end - interval 12 month and f.followup_date <= m.month_end
    where f.disease_type in ('hypertension', 'diabetes')

),

patients_in_window as (

    select
        institution_code,
        period_month,
        disease_type,
        coalesce(person_key, record_key) as patient,
        count(*) as followups,
        arg_max(is_controlled, followup_date) as is_controlled_at_last
    from followups_in_window
    group by all

),

chronic as (   -- IND04 IND05 IND06 IND07

    select case disease_type when 'hypertension' then 'IND04' else 'IND05' end as indicator_code,
           institution_code, period_month,
           count(*) filter (where followups >= 4) as numerator, count(*) as denominator
    from patients_in_window group by all
    union all
    select case disease_type when 'hypertension' then 'IND06' else 'IND07' end as indicator_code,
           institution_code, period_month,
           count(*) filter (where is_controlled_at_last) as numerator, count(*) as denominator
    from patients_in_window group by all

),

mothers_care as (

    select
        person_key,
        count(*) filter (where service_type_code = '1') as antenatal_visits,
        count(*) filter (where service_type_code = '2') as postpartum_visits
    from {{ ref('fct_maternal_child_visit') }}
    where person_key is not null
    group by person_key

),

maternal as (   -- IND09

    select 'IND09' as indicator_code, births.institution_code, m.period_month,
           count(*) filter (where care.antenatal_visits >= 5 and care.postpartum_visits >= 1) as numerator,
           count(*) as denominator
    from {{ ref('fct_vital_event') }} as births
    join months as m on date_trunc('month', births.event_date) = m.period_month
    left join mothers_care as care on care.person_key = births.mother_person_key
    where births.event_type_code = '1'
    group by all

),

results as (

    select institution_code, date_trunc('month', reported_at) as period_month,
           person_key is not null and is_known_lab_item as is_shareable
    from {{ ref('fct_lab_result') }}
    union all
    select institution_code, date_trunc('month', reported_at) as period_month,
           person_key is not null as is_shareable
    from {{ ref('fct_exam_report') }}

),

mutual_recognition as (   -- IND11

    select 'IND11' as indicator_code, r.institution_code, m.period_month,
           count(*) filter (where r.is_shareable) as numerator, count(*) as denominator
    from results as r
    join months as m on cast(r.period_month as date) = m.period_month
    group by all

),

code_mapping as (   -- IND12

    select 'IND12' as indicator_code, c.institution_code, m.period_month,
           coalesce(sum(c.row_count) filter (where c.is_mapped), 0) as numerator, sum(c.row_count) as denominator
    from {{ ref('int_code_values_by_batch') }} as c
    join months as m on c.ingested_month = m.period_month
    group by all

),

{%- set has_quality = execute and quality_gate_table_exists() %}
{%- if has_quality %}
quality_pass as (   -- IND13: the quality office's row pass rate per batch (quality.batch_gate, current decision)

    select 'IND13' as indicator_code, g.institution_code, m.period_month,
           cast(sum(round(g.rows_checked * g.pass_rate)) as bigint) as numerator,
           cast(sum(g.rows_checked) as bigint) as denominator
    from (
        select batch_id, dataset,
               arg_max(institution_code, decided_at) as institution_code,
               arg_max(rows_checked, decided_at) as rows_checked,
               arg_max(pass_rate, decided_at) as pass_rate,
               min(decided_at) as first_decided_at
        from {{ target.database }}.quality.batch_gate
        group by batch_id, dataset
    ) as g
    join months as m on cast(date_trunc('month', g.first_decided_at) as date) = m.period_month
    where g.pass_rate is not null and g.rows_checked > 0
    group by all

),
{%- endif %}

by_institution as (

    select * from connected
    union all select * from feed_coverage
    union all select * from chronic
    union all select * from maternal
    union all select * from mutual_recognition
    union all select * from code_mapping
    {%- if has_quality %}
    union all select * from quality_pass
    {%- endif %}

),

---------------------------------------------------------------- population-based (per district)
person_months as (

    select p.person_key, p.birth_date, p.division_code, m.period_month, m.month_end
    from persons as p cross join months as m

),

records as (

    select person_key, min(created_date) as first_created
    from {{ ref('dim_health_record') }}
    where person_key is not null
    group by person_key

),

vaccinated as (

    select person_key, min(vaccinated_date) as first_vaccinated
    from {{ ref('fct_immunization') }}
    where person_key is not null
    group by person_key

),

elderly_checks as (

    select person_key, check_date
    from {{ ref('fct_elderly_health_check') }}
    where person_key is not null

),

by_district_people as (

    select 'IND03' as indicator_code, pm.division_code, pm.period_month,
           count(*) filter (where r.first_created <= pm.month_end) as numerator, count(*) as denominator
    from person_months as pm
    left join records as r on r.person_key = pm.person_key
    group by all

    union all

    select 'IND08', pm.division_code, pm.period_month,
           count(*) filter (where v.first_vaccinated <= pm.month_end), count(*)
    from person_months as pm
    left join vaccinated as v on v.person_key = pm.person_key
    where pm.birth_date <= pm.month_end and pm.birth_date > pm.month_end - interval 7 year
    group by all

    union all

    select 'IND10', pm.division_code, pm.period_month,
           count(*) filter (where exists (
               select 1 from elderly_checks as e
               where e.person_key = pm.person_key
                 and e.check_date > pm.month_end - interval 12 month and e.check_date <= pm.month_end)),
           count(*)
    from person_months as pm
    where pm.birth_date <= pm.month_end - interval 65 year
    group by all

),

---------------------------------------------------------------- scopes
scoped as (

    select b.indicator_code, 'institution' as scope, b.institution_code, i.division_code, b.period_month,
           b.numerator, b.denominator
    from by_institution as b
    left join institutions as i on i.institution_code = b.institution_code

    union all

    select b.indicator_code, 'district', null, i.division_code, b.period_month, sum(b.numerator), sum(b.denominator)
    from by_institution as b
    left join institutions as i on i.institution_code = b.institution_code
    group by all

    union all

    select indicator_code, 'district', null, division_code, period_month, numerator, denominator
    from by_district_people

    union all

    select indicator_code, 'city', null, null, period_month, sum(numerator), sum(denominator)
    from (
        select indicator_code, period_month, numerator, denominator from by_institution
        union all
        select indicator_code, period_month, numerator, denominator from by_district_people
    ) as everything
    group by all

),

definitions as (

    select * from {{ ref('indicator_definitions') }}

),

divisions as (

    select * from {{ ref('gbt2260_divisions_sichuan') }}

),

final as (

    select
        {{ hash_key(['scoped.indicator_code', 'scoped.scope', "coalesce(scoped.institution_code, '')",
                     "coalesce(scoped.division_code, '')", 'scoped.period_month']) }} as indicator_value_key,
        scoped.indicator_code,
        definitions.name_zh as indicator_name,
        scoped.scope,
        case scoped.scope when 'institution' then '机构' when 'district' then '区县' else '全市' end as scope_name,
        scoped.institution_code,
        scoped.division_code,
        divisions.division_name,
        scoped.period_month,
        cast(scoped.numerator as bigint) as numerator,
        cast(scoped.denominator as bigint) as denominator,
        cast(scoped.numerator as double) / scoped.denominator as value,
        definitions.target,
        cast(scoped.numerator as double) / scoped.denominator >= definitions.target as meets_target
    from scoped
    join definitions
        on definitions.indicator_code = scoped.indicator_code
        -- each indicator is published at the scopes its definition names
        and list_contains(string_split(definitions.scopes, ';'), scoped.scope)
    left join divisions on divisions.division_code = scoped.division_code
    where scoped.denominator > 0

)

select * from final
