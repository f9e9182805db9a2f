ALTER TABLE messages DROP COLUMN IF EXISTS sender_username;
