DROP INDEX IF EXISTS leads_message_idx;
DROP INDEX IF EXISTS messages_in_reply_to_idx;
