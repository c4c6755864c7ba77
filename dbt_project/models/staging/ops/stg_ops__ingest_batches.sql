with

source as (

    select * from {{ source('ops', 'ingest_batch') }}

),

renamed as (

    select
        ----------  ids
        batch_id,
        institution_code,
        feed,
        dataset,
        sha256,

        ----------  strings
        format as file_format,
        encoding as file_encoding,
        source_file,
        status,
        error,

        ----------  numerics
        bytes,
        rows_read,
        rows_loaded,
        rows_rejected,

        ----------  booleans
        status = 'loaded' as is_loaded,

        ----------  timestamps
        started_at,
        finished_at

    from source

)

select * from renamed
