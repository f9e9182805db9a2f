DROP TABLE IF EXISTS telethon_entities;
DROP TABLE IF EXISTS telethon_update_state;
