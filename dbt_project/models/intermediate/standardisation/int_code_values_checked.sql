-- Every coded value the institutions sent, checked against its national code table: one row per
-- (source row, coded element) with a value. Codes are read as staging standardised them
-- (codes.sql: '男' → '1', 'i10 ' → 'I10', '1' → '01'); a value that still matches no code of its
-- table is unmapped. Nothing is dropped here or in the marts: resource.unmapped_code lists the
-- unmapped values per institution and code system, the marts keep them with is_known_* false.
-- Rows are counted as received (every version an institution sent), so a re-sent row counts again.

-- Each staging model is read once and unpivoted into its coded elements (macros/code_value_checks.sql).

{{ code_values_checked() }}
