-- Every indicator is a share: 0 <= numerator <= denominator, value in [0, 1].
{{ config(tags=['sev_1']) }}
select *
from {{ ref('fct_indicator_value') }}
where numerator < 0 or numerator > denominator or value < 0 or value > 1
