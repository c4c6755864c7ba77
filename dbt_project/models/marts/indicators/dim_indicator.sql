-- 指标目录：one row per plan indicator computed in indicators.fct_indicator_value, with its
-- Chinese name, numerator, denominator, formula, scopes, window, source and target (seed
-- indicator_definitions: the definitions are data, reviewed like code).

select
    indicator_code,
    name_zh as indicator_name,
    numerator_zh as numerator_definition,
    denominator_zh as denominator_definition,
    formula_zh as formula,
    scopes,
    window_zh as time_window,
    source_zh as source,
    target
from {{ ref('indicator_definitions') }}
