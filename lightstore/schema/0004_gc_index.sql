-- lightstore catalogue, version 4: an index for garbage collection on big stores.
--
-- The gc plan lists the realizations that nothing live reaches, sorted, with
-- the bytes they hold. The primary key's index has the references but not the
-- sizes, and a `realizations` row also holds its context JSON: reading the
-- table for the sizes, then sorting, is most of a plan on a million
-- realizations. This covering index is the references in order with their
-- sizes, so the plan reads it once and sorts nothing.
CREATE INDEX realizations_by_rref_size ON realizations (rref, size);
