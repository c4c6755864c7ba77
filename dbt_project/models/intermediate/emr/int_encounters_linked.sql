{{ config(materialized='view') }}

-- Encounters with the person they belong to: one row per (institution_code, encounter_id).
-- The encounter's own ID number wins when it is valid and known to the platform (a linked
-- identity has it); otherwise the institution's own patient record (person data set, same
-- patient_id) decides. Person keys come only from int_identities_linked, so every key here is a
-- person of dim_person.
-- A view: fct_encounter (incremental) is its one reader; the other facts read fct_encounter.

{{ link_encounters("select * from " ~ ref('int_encounters_deduplicated')) }}
