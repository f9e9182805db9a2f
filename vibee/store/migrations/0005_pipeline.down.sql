DROP TABLE IF EXISTS dead_letters;
DROP TABLE IF EXISTS leads;
DROP TABLE IF EXISTS personas;
DROP TABLE IF EXISTS chat_defaults;
ALTER TABLE chat_configs DROP COLUMN IF EXISTS tz, DROP COLUMN IF EXISTS sniper_reply,
    DROP COLUMN IF EXISTS lead_chat_id;
ALTER TABLE telegram_sessions DROP COLUMN IF EXISTS tg_username;
