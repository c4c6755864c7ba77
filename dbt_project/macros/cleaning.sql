{#- Cleaning of raw source text (bronze keeps every value as the institution sent it).

    Staging applies clean_text() once to every source column (its `trimmed` CTE); every other
    macro here and in parsing.sql / codes.sql takes such TRIMMED text, so a model's SQL stays small
    (expanding clean_text inside every parse made one staging view ~20 kB and 0.8 s to plan).
    None of them can fail on a bad value: what cannot be read becomes null, and staging flags it
    (is_valid_<column>). -#}

{#- Whitespace trimmed from both ends: space, tab, CR, LF, ideographic space (U+3000), NBSP. -#}
{% macro _whitespace_chars() -%}
    (chr(32) || chr(9) || chr(10) || chr(13) || chr(12288) || chr(160))
{%- endmacro %}

{#- Trimmed text; empty strings and the usual null tokens of extracts become null. -#}
{% macro clean_text(col) -%}
    case
        when upper(trim({{ col }}, {{ _whitespace_chars() }})) in ('', 'NULL', '\N', 'N/A', 'NONE') then null
        else trim({{ col }}, {{ _whitespace_chars() }})
    end
{%- endmacro %}

{#- A numeric code padded to its fixed width ('1' → '01' for two-digit code tables); anything that
    is not all digits is kept, upper-cased (and fails the value-set tests). -#}
{% macro pad_code(col, width) -%}
    case
        when regexp_full_match({{ col }}, '[0-9]{1,{{ width }}}') then lpad({{ col }}, {{ width }}, '0')
        else upper({{ col }})
    end
{%- endmacro %}

{#- ID number (身份证件号码): all inner whitespace and hyphens removed, upper-cased (check character
    x → X, full-width ｘ → X). -#}
{% macro clean_id_number(col) -%}
    nullif(upper(replace(regexp_replace({{ col }}, '[\s\-\x{3000}]', '', 'g'), 'ｘ', 'X')), '')
{%- endmacro %}

{#- True when the value the source sent could be read: the value is absent (a completeness question,
    not a conformance one) or its typed form is not null. -#}
{% macro is_conformant(trimmed_col, typed_expr) -%}
    ({{ trimmed_col }} is null or ({{ typed_expr }}) is not null)
{%- endmacro %}

{#- `clean_text(c) as c` for each column: the select list of a staging model's `trimmed` CTE. -#}
{% macro trim_columns(columns) -%}
    {%- for c in columns %}
        {{ clean_text(c) }} as {{ c }}{{ ',' if not loop.last }}
    {%- endfor %}
{%- endmacro %}

{#- The bronze lineage columns, unchanged (every staging model ends with them). -#}
{% macro lineage_columns(relation_alias=none) -%}
    {%- set prefix = relation_alias ~ '.' if relation_alias else '' -%}
    {%- for c in ['_feed', '_batch_id', '_source_file', '_source_row', '_ingested_at', '_row_hash'] %}
        {{ prefix }}{{ c }}{{ ',' if not loop.last }}
    {%- endfor %}
{%- endmacro %}
