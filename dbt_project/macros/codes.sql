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

{#- ICD-10 code in one form. Institutions send the same diagnosis as 'I10', 'I10.x00', 'i10 ',
    'I10X00', 'E119' or 'E11.900': upper-cased, whitespace (ideographic too) removed, a full-width
    dot read as a dot, the dot inserted after the category when missing ('I109' → 'I10.9'), a
    trailing dot dropped; then the extension that only restates its parent is removed: '.X00' after
    a category ('I10.X00' → 'I10') and '00' after a subcategory ('E11.900' → 'E11.9'), as the
    clinical editions write the parent itself. Other extensions stay ('K29.701', 'I10.X01'). -#}
{% macro standardise_icd10(col) -%}
    nullif(regexp_replace(regexp_replace(regexp_replace(
        upper(replace(regexp_replace({{ col }}, '[\s\x{3000}]', '', 'g'), '．', '.')),
        '^([A-Z][0-9]{2})([0-9X])', '\1.\2'),
        '^([A-Z][0-9]{2})(\.X00|\.)$', '\1'),
        '^([A-Z][0-9]{2}\.[0-9])00$', '\1'), '')
{%- endmacro %}

{#- ICD-10 code shape (of a standardised code): a letter, two digits, then optionally a dot and up
    to four characters (the 2011 MoH revision's extension codes included, e.g. A00.000, A01.001+). -#}
{% macro is_icd10_shaped(col) -%}
    coalesce(regexp_full_match({{ col }}, '[A-Z][0-9]{2}(\.[0-9A-Z]{1,4}[+*]?)?'), false)
{%- endmacro %}


{#- ICD-9-CM-3 procedure code: upper-cased, whitespace removed, the dot after the two-digit
    category inserted when missing ('01011' → '01.011'). -#}
{% macro standardise_icd9cm3(col) -%}
    nullif(regexp_replace(
        upper(replace(regexp_replace({{ col }}, '[\s\x{3000}]', '', 'g'), '．', '.')),
        '^([0-9]{2})([0-9])', '\1.\2'), '')
{%- endmacro %}

{#- ABO blood type (WS 364 CV04.50.005): 1 A, 2 B, 3 O, 4 AB, 5 不详; letters or Chinese accepted. -#}
{% macro standardise_abo(col) -%}
    case
        when {{ col }} in ('1', '2', '3', '4', '5') then {{ col }}
        when upper(replace(replace({{ col }}, '型', ''), '血', '')) = 'A' then '1'
        when upper(replace(replace({{ col }}, '型', ''), '血', '')) = 'B' then '2'
        when upper(replace(replace({{ col }}, '型', ''), '血', '')) in ('O', '0') then '3'
        when upper(replace(replace({{ col }}, '型', ''), '血', '')) = 'AB' then '4'
        when {{ col }} in ('不详', '未知') then '5'
        else upper({{ col }})
    end
{%- endmacro %}

{#- Rh blood type (WS 445): 1 阴性, 2 阳性, 3 不详, 4 未查. -#}
{% macro standardise_rh(col) -%}
    case
        when {{ col }} in ('1', '2', '3', '4') then {{ col }}
        when upper(replace({{ col }}, '(D)', '')) in ('阴性', 'RH阴性', 'RH-', '-', 'NEG', 'NEGATIVE') then '1'
        when upper(replace({{ col }}, '(D)', '')) in ('阳性', 'RH阳性', 'RH+', '+', 'POS', 'POSITIVE') then '2'
        when {{ col }} in ('不详', '未知') then '3'
        when {{ col }} = '未查' then '4'
        else upper({{ col }})
    end
{%- endmacro %}

{#- True when a standardised ICD-10 code is in the national table: its category exists and, when
    it names a subcategory (E11.9; not the clinical editions' placeholder X, I10.X01), that
    subcategory exists too. `category` and `subcategory` are the aliases of left joins on
    icd10_categories (substr(code, 1, 3)) and icd10_subcategories (substr(code, 1, 5)). -#}
{% macro icd10_is_known(col, category='icd10_category', subcategory='icd10_subcategory') -%}
    coalesce(
        {{ is_icd10_shaped(col) }}
        and {{ category }}.category_code is not null
        and (length({{ col }}) = 3 or substr({{ col }}, 5, 1) = 'X' or {{ subcategory }}.subcategory_code is not null),
        false)
{%- endmacro %}
