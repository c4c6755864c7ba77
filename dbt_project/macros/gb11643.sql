{#- GB 11643-1999 citizen identity number check (公民身份号码校验).

    18 characters: 17 digits and a check character. The check character is
    '10X98765432'[ (Σ digit_i × weight_i) mod 11 ] with weights 7 9 10 5 8 4 2 1 6 3 7 9 10 5 8 4 2.
    `col` must already be cleaned (clean_id_number: no spaces, upper-case X); a null is not valid.
    Digits are read with ascii() - 48, which cannot fail on a bad character (the shape test guards
    the sum, but SQL does not promise to evaluate it first). -#}
{% macro gb11643_is_valid(col) -%}
    {%- set weights = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2] -%}
    coalesce(
        regexp_full_match({{ col }}, '[0-9]{17}[0-9X]')
        and substr('10X98765432', cast((
            {%- for w in weights %}
            {{ w }} * (ascii(substr({{ col }}, {{ loop.index }}, 1)) - 48){{ ' +' if not loop.last }}
            {%- endfor %}
        ) % 11 as integer) + 1, 1) = substr({{ col }}, 18, 1),
        false
    )
{%- endmacro %}
