-- 床位与使用：one row per institution and day (census_date): the beds its department dictionary
-- declares (核定/实际开放床位) and the inpatients in the house at midnight (每日 24 时在院人数:
-- admitted on or before the day and not discharged before its end), admissions and discharges of
-- the day, and the occupancy (病床使用率 = 在院人数 / 实际开放床位数).
-- Days: from a year before the last ingest up to the last ingest day, the days that have any
-- inpatient activity or census; dates beyond the last ingest (a mistyped year) are left out.

with

beds as (

    select
        institution_code,
        cast(sum(approved_beds) as integer) as approved_beds,
        cast(sum(open_beds) as integer) as open_beds
    from {{ ref('int_departments_deduplicated') }}
    group by institution_code

),

inpatient_stays as (

    select
        institution_code,
        cast(visit_at as date) as admitted_on,
        cast(discharge_at as date) as discharged_on
    from {{ ref('int_encounters_deduplicated') }}
    where visit_type_code = '3'
      and visit_at is not null
      and (discharge_at is null or discharge_at >= visit_at)

),

bounds as (

    select
        cast(max(_ingested_at) as date) as last_day,
        cast(max(_ingested_at) as date) - interval 366 day as first_day
    from {{ ref('int_encounters_deduplicated') }}

),

days as (

    select cast(d as date) as census_date
    from bounds, generate_series(bounds.first_day, bounds.last_day, interval 1 day) as t(d)

),

census as (

    select
        stays.institution_code,
        days.census_date,
        count(*) filter (where stays.admitted_on <= days.census_date
                           and (stays.discharged_on is null or stays.discharged_on > days.census_date))
            as inpatients_at_midnight,
        count(*) filter (where stays.admitted_on = days.census_date) as admissions,
        count(*) filter (where stays.discharged_on = days.census_date) as discharges
    from inpatient_stays as stays
    join days
        on days.census_date >= stays.admitted_on
        and days.census_date <= coalesce(stays.discharged_on, (select last_day from bounds))
    group by all

),

final as (

    select
        {{ hash_key(['census.institution_code', 'census.census_date']) }} as bed_capacity_key,
        census.institution_code,
        census.census_date,
        beds.approved_beds,
        beds.open_beds,
        cast(census.inpatients_at_midnight as integer) as inpatients_at_midnight,
        cast(census.admissions as integer) as admissions,
        cast(census.discharges as integer) as discharges,
        cast(case when beds.open_beds > 0 then census.inpatients_at_midnight / beds.open_beds end as double)
            as occupancy_rate
    from census
    left join beds on beds.institution_code = census.institution_code

)

select * from final
