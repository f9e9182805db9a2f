-- Who wrote an incoming message, by @username when Telegram gave one: a lead card names
-- the sender with it, and in a group the twin's dialog tells the people apart by it.
-- Nullable without a default: adding it rewrites nothing.

ALTER TABLE messages ADD COLUMN sender_username text;
