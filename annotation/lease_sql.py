"""The SQL step that leases a prompt, shared by the ordinary claim (`annotation.leases`) and
the gold claim (`annotation.quality`): given a CTE `slot` holding the prompt id whose slot was
just taken, insert the annotator's active assignment with the prompt's completions shuffled by
the database. Parameters: annotator, expires, now.

The INSERT names every column: a field added to Assignment must be added here too (the
concurrency tests run this path)."""

LEASED_CTE = """
    leased AS (
        INSERT INTO annotation_assignment (
            prompt_id, annotator_id, status, lease_expires_at, display_order,
            ranking_id, skip_reason, created_at, finished_at
        )
        SELECT
            slot.id, %(annotator)s, 'active', %(expires)s,
            (SELECT coalesce(jsonb_agg(c.id ORDER BY random()), '[]'::jsonb)
             FROM annotation_completion c WHERE c.prompt_id = slot.id),
            NULL, '', %(now)s, NULL
        FROM slot
        RETURNING id
    )"""
