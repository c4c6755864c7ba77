with

source as (

    select * from {{ source('ops', 'institution') }}

),

renamed as (

    select
        ----------  ids
        {{ clean_text('institution_code') }} as institution_code,
        {{ clean_text('division_code') }} as division_code,

        ----------  strings
        {{ clean_text('institution_name') }} as institution_name,
        {{ clean_text('kind') }} as institution_kind,
        {{ clean_text('level') }} as institution_level,

        ----------  numerics
        feed_count,

        ----------  timestamps
        registered_at

    from source

)

select * from renamed
