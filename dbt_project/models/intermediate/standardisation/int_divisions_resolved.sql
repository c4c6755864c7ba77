-- Every division code an institution may send, with the current GB/T 2260 code it stands for:
-- the codes of the division table themselves, and the retired codes of the change table
-- (510122 双流县 → 510116 双流区). One row per division_code.

with

divisions as (

    select * from {{ ref('gbt2260_divisions_sichuan') }}

),

changes as (

    select * from {{ ref('gbt2260_division_changes') }}

),

resolved as (

    select
        divisions.division_code,
        coalesce(changes.current_code, divisions.division_code) as current_division_code,
        changes.retired_code is not null as is_retired
    from divisions
    left join changes on changes.retired_code = divisions.division_code

)

select
    resolved.division_code,
    resolved.current_division_code,
    current_divisions.division_name as current_division_name,
    current_divisions.division_level as current_division_level,
    resolved.is_retired
from resolved
left join {{ ref('gbt2260_divisions_sichuan') }} as current_divisions
    on current_divisions.division_code = resolved.current_division_code
