{#- Typed values from trimmed source text (clean_text). Institutions send dates and times in
    several formats; each macro tries them all and yields null (never an error) when none fits. -#}

{#- strptime formats, most specific first. '%Y%m%d' and '%Y%m%d%H%M%S' are the compact forms of
    older HIS extracts; '%Y/%m/%d' comes from spreadsheets (one-digit month and day are read too). -#}
{% macro _timestamp_formats() -%}
    ['%Y-%m-%d %H:%M:%S', '%Y-%m-%d %H:%M:%S.%f', '%Y-%m-%dT%H:%M:%S', '%Y-%m-%d %H:%M',
     '%Y%m%d%H%M%S', '%Y/%m/%d %H:%M:%S', '%Y/%m/%d %H:%M',
     '%Y-%m-%d', '%Y%m%d', '%Y/%m/%d']
{%- endmacro %}

{#- A local date-time (TIMESTAMP, Beijing time as recorded by the institution); a date alone is
    read as midnight. An ISO 8601 date-time with an offset or 'Z' (FHIR, Synthea exports:
    '2021-08-23T03:26:50Z') is converted to Beijing time. -#}
{% macro parse_timestamp(col) -%}
    coalesce(
        try_strptime({{ col }}, {{ _timestamp_formats() }}),
        timezone('Asia/Shanghai', try_strptime(regexp_replace({{ col }}, '[Zz]$', '+00:00'),
                                               ['%Y-%m-%dT%H:%M:%S%z', '%Y-%m-%dT%H:%M:%S.%f%z']))
    )
{%- endmacro %}

{#- A DATE; a date-time is accepted too (its date part is kept). -#}
{% macro parse_date(col) -%}
    cast({{ parse_timestamp(col) }} as date)
{%- endmacro %}

{#- An INTEGER: digits with an optional sign and an all-zero fraction ('12', '+12', '12.0');
    '12.5' and '12岁' are null (a plain cast would round '12.5' to 13). -#}
{% macro parse_integer(col) -%}
    case
        when regexp_full_match({{ col }}, '[+-]?[0-9]{1,9}(\.0*)?')
            then cast(split_part({{ col }}, '.', 1) as integer)
    end
{%- endmacro %}

{#- A DECIMAL(precision, scale); thousands separators ('1,234.50') are removed first. -#}
{% macro parse_decimal(col, precision=18, scale=4) -%}
    try_cast(replace({{ col }}, ',', '') as decimal({{ precision }}, {{ scale }}))
{%- endmacro %}
