{#- Standardisation of coded values (trimmed text, clean_text) to the national value sets.
    Unknown values are kept as sent, upper-cased, so the accepted_values tests and the quality
    rules can report them. -#}

{#- GB/T 2261.1 sex code: 0 未知的性别, 1 男, 2 女, 9 未说明的性别. Institutions send the code, or
    the Chinese (男/女/未知) or English text. -#}
{% macro standardise_sex(col) -%}
    case
        when upper({{ col }}) in ('0', '1', '2', '9') then {{ col }}
        when upper({{ col }}) in ('男', '男性', 'M', 'MALE') then '1'
        when upper({{ col }}) in ('女', '女性', 'F', 'FEMALE') then '2'
        when upper({{ col }}) in ('未知', '未知的性别', 'U', 'UNKNOWN') then '0'
        when upper({{ col }}) in ('未说明', '未说明的性别') then '9'
        else upper({{ col }})
    end
{%- endmacro %}

{#- WS 445 patient type (就诊类型): 1 门诊, 2 急诊, 3 住院, 9 其他 ('03' is read as 3). -#}
{% macro standardise_visit_type(col) -%}
    case
        when ltrim({{ col }}, '0') in ('1', '2', '3', '9') then ltrim({{ col }}, '0')
        when upper({{ col }}) in ('门诊', 'O', 'OP', 'OUTPATIENT') then '1'
        when upper({{ col }}) in ('急诊', 'E', 'EM', 'EMERGENCY') then '2'
        when upper({{ col }}) in ('住院', 'I', 'IP', 'INPATIENT') then '3'
        when {{ col }} = '其他' then '9'
        else upper({{ col }})
    end
{%- endmacro %}

{#- Lab abnormal flag: H (偏高), L (偏低), N (正常), A (异常, direction not given). -#}
{% macro standardise_abnormal_flag(col) -%}
    case
        when upper({{ col }}) in ('H', 'HH', '↑', '高', '偏高') then 'H'
        when upper({{ col }}) in ('L', 'LL', '↓', '低', '偏低') then 'L'
        when upper({{ col }}) in ('N', '正常', '-') then 'N'
        when upper({{ col }}) in ('A', '异常', '阳性', '+', 'POS') then 'A'
        else upper({{ col }})
    end
{%- endmacro %}

{#- ICD-10 code: upper-cased, inner spaces removed ('i10 .x00' → 'I10.X00'); a 4-character code
    sent without its dot ('I109') gets it ('I10.9'). -#}
{% macro standardise_icd10(col) -%}
    case
        when regexp_full_match(upper(replace({{ col }}, ' ', '')), '[A-Z][0-9]{2}[0-9X]')
            then substr(upper(replace({{ col }}, ' ', '')), 1, 3) || '.' || substr(upper(replace({{ col }}, ' ', '')), 4)
        else nullif(upper(replace({{ col }}, ' ', '')), '')
    end
{%- endmacro %}

{#- ICD-10 code shape (of a standardised code): a letter, two digits, then optionally a dot and up
    to four characters (the 2011 MoH revision's extension codes included, e.g. A00.000, A01.001+). -#}
{% macro is_icd10_shaped(col) -%}
    coalesce(regexp_full_match({{ col }}, '[A-Z][0-9]{2}(\.[0-9A-Z]{1,4}[+*]?)?'), false)
{%- endmacro %}
