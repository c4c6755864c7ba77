-- 医疗卫生机构：one row per registered institution (ops.institution) with its connection status:
-- what it has delivered to the platform, from the ingest's batch ledger (loaded batches only).

with

institutions as (

    select * from {{ ref('stg_ops__institutions') }}

),

batches as (

    select * from {{ ref('stg_ops__ingest_batches') }}

),

divisions as (

    select * from {{ ref('gbt2260_divisions_sichuan') }}

),

deliveries as (

    select
        institution_code,
        min(finished_at) filter (where is_loaded) as first_data_received_at,
        max(finished_at) filter (where is_loaded) as last_data_received_at,
        count(*) filter (where is_loaded) as batches_loaded,
        count(*) filter (where status = 'failed') as batches_failed,
        coalesce(sum(rows_loaded) filter (where is_loaded), 0) as rows_loaded,
        coalesce(sum(rows_rejected) filter (where is_loaded), 0) as rows_rejected,
        count(distinct dataset) filter (where is_loaded) as datasets_loaded
    from batches
    group by institution_code

),

final as (

    select
        institutions.institution_code,
        institutions.institution_name,
        institutions.institution_kind,
        institutions.institution_level,
        institutions.division_code,
        divisions.division_name,
        institutions.feed_count,
        institutions.registered_at,
        deliveries.first_data_received_at,
        deliveries.last_data_received_at,
        cast(coalesce(deliveries.batches_loaded, 0) as integer) as batches_loaded,
        cast(coalesce(deliveries.batches_failed, 0) as integer) as batches_failed,
        cast(coalesce(deliveries.rows_loaded, 0) as bigint) as rows_loaded,
        cast(coalesce(deliveries.rows_rejected, 0) as bigint) as rows_rejected,
        cast(coalesce(deliveries.datasets_loaded, 0) as integer) as datasets_loaded,
        coalesce(deliveries.batches_loaded, 0) > 0 as is_connected
    from institutions
    left join deliveries on deliveries.institution_code = institutions.institution_code
    left join divisions on divisions.division_code = institutions.division_code

)

select * from final
