-- Each institution's patients (person data set) with their person_key, for the EMR facts that
-- identify the patient only by the institution's own patient_id: one row per
-- (institution_code, patient_id); person_key null while the patient is unlinked.

select
    institution_code,
    source_id as patient_id,
    person_key
from {{ ref('int_identities_linked') }}
where source_dataset = 'person'
