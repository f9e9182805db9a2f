DROP TABLE IF EXISTS refresh_tokens;
DROP TABLE IF EXISTS refresh_families;
ALTER TABLE users DROP COLUMN IF EXISTS auth_generation;
