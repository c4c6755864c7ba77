-- One person per ID number, for the facts that name their person by an ID number only (public
-- health services, vital events): the person_key the identity linkage gave that number (when the
-- EMPI ever disagrees with itself, the smallest key, stably). One row per id_number.

select
    id_number,
    min(person_key) as person_key
from {{ ref('int_identities_linked') }}
where person_key is not null
  and id_number is not null
group by id_number
