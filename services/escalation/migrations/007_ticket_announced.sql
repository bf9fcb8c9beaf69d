-- Which event told the customer that a person is coming (NULL: not told yet). A ticket opened
-- by a turn is announced by that turn's handoff notice; one opened by a flagged bot reply is
-- announced by the customer's next turn, which would otherwise get silence (the bot no longer
-- owns the conversation and no notice was ever sent), or by an agent's first reply.
ALTER TABLE escalation.tickets ADD COLUMN IF NOT EXISTS announced_by_event uuid;
-- Tickets from before this column: those a turn opened were announced by it; those a flagged
-- reply opened stay unannounced, so a customer still waiting hears at their next turn.
UPDATE escalation.tickets SET announced_by_event = opened_by_event
    WHERE announced_by_event IS NULL AND NOT reasons @> '[{"code": "generation_flags"}]';
