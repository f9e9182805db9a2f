-- Indexes for the foreign keys that point at messages without one. Deleting a message
-- (the pipeline drops the account's own copy of every reply it sent) made Postgres look
-- for rows referencing it with a sequential scan of messages (in_reply_to, ON DELETE SET
-- NULL) and of leads: about 8 ms per reply on a 100,000-message table, growing with it.
-- Built without CONCURRENTLY (migrations run in a transaction): writes to messages wait
-- while it builds, a few seconds per million rows.

CREATE INDEX messages_in_reply_to_idx ON messages (in_reply_to) WHERE in_reply_to IS NOT NULL;
CREATE INDEX leads_message_idx ON leads (message_id) WHERE message_id IS NOT NULL;
